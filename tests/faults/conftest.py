"""Fixtures for the fault tests: services whose broker and database lines go through a
``FaultProxy`` that the test cuts and restores. The real RabbitMQ and PostgreSQL are never
restarted (other tests share them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from proxy import FaultProxy
from sqlalchemy.engine import make_url

from support import PG_ADMIN_URL

# Recovery settings for every service under test: short reconnect and relay backoffs so a
# few seconds' outage is over in a few seconds, a short database connect timeout.
FAST_RECOVERY = {
    "GRIDFLOW_RELAY_MAX_BACKOFF_S": 1.0,
    "GRIDFLOW_RECONNECT_MAX_S": 1.0,
    "GRIDFLOW_DB_CONNECT_TIMEOUT_S": 2.0,
}


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    u = make_url(url)
    host = u.host or "127.0.0.1"
    return ("127.0.0.1" if host == "localhost" else host), (u.port or default_port)


@pytest.fixture
def broker_proxy(rabbit_config: dict[str, Any]) -> Iterator[FaultProxy]:
    """A proxy in front of the test's RabbitMQ."""
    url = rabbit_config["AMQP_URI"].replace("pyamqp://", "amqp://", 1)
    with FaultProxy(_host_port(url, 5672)) as proxy:
        yield proxy


@pytest.fixture
def pg_proxy() -> Iterator[FaultProxy]:
    """A proxy in front of the test's PostgreSQL."""
    with FaultProxy(_host_port(PG_ADMIN_URL, 5432)) as proxy:
        yield proxy


@pytest.fixture
def pg_proxy2() -> Iterator[FaultProxy]:
    """Another one, for services whose database line fails on its own."""
    with FaultProxy(_host_port(PG_ADMIN_URL, 5432)) as proxy:
        yield proxy


@pytest.fixture
def faulty(
    broker_proxy: FaultProxy,
    run_services: Any,
    service_config: dict[str, Any],
) -> Iterator[Callable[..., dict[str, Any]]]:
    """Start services whose AMQP_URI goes through ``broker_proxy`` and, with ``db_proxy``,
    whose DATABASE_URL goes through that proxy. Every proxy is restored before the services
    are killed (so nothing waits on a dead line at teardown) and stopped after."""
    proxies = [broker_proxy]

    def start(*classes: type, db_proxy: FaultProxy | None = None, **settings: Any) -> dict:
        config = {
            **service_config,
            **FAST_RECOVERY,
            "AMQP_URI": broker_proxy.url(service_config["AMQP_URI"]),
            **settings,
        }
        if db_proxy is not None:
            assert service_config["DATABASE_URL"], "a database proxy needs PostgreSQL"
            config["DATABASE_URL"] = db_proxy.url(service_config["DATABASE_URL"])
            proxies.append(db_proxy)
        return run_services(*classes, config=config)

    yield start
    for proxy in proxies:
        proxy.restore()
