"""Fixtures for every test: a fresh RabbitMQ vhost and a fresh database per test.

The broker is the real RabbitMQ at 127.0.0.1:5672 (management API at :15672, used by
nameko's ``rabbit_config`` fixture to create a vhost per test). Database-backed tests
run twice: on SQLite files and on a fresh PostgreSQL database
(``GRIDFLOW_TEST_PG_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``).
``GRIDFLOW_TEST_DATABASES=sqlite`` limits a run to one backend.
"""

import os
import warnings

# trio (selenium's) registers a hypothesis plugin that cannot be imported once eventlet has
# patched the socket module; gridflow's tests use no hypothesis plugin.
os.environ.setdefault("HYPOTHESIS_NO_PLUGINS", "1")
warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import sys  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import requests  # noqa: E402
from nameko.testing.utils import find_free_port  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from support import (  # noqa: E402
    PG_ADMIN_URL,
    TEST_BACKENDS,
    bearer,
    issue_key,
    start_services,
)


def pytest_report_header(config: Any) -> str:
    return f"gridflow: databases {','.join(TEST_BACKENDS)}; PostgreSQL admin {PG_ADMIN_URL}"


@pytest.fixture(params=TEST_BACKENDS)
def database_url(request: Any) -> Iterator[str | None]:
    """None for SQLite (each service its own file); a fresh database URL for PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    name = f"gridflow_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed for the postgresql runs: {exc}")
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def http_port() -> int:
    return find_free_port()


METRICS_TOKEN = "test-metrics-token"


@pytest.fixture
def service_config(
    rabbit_config: dict[str, Any], database_url: str | None, tmp_path: Path, http_port: int
) -> dict[str, Any]:
    """nameko config for in-process service containers, one vhost and one DB per test."""
    return {
        "AMQP_URI": rabbit_config["AMQP_URI"],
        "DATABASE_URL": database_url,
        "GRIDFLOW_VAR_DIR": str(tmp_path / "var"),
        "WEB_SERVER_ADDRESS": f"127.0.0.1:{http_port}",
        "GRIDFLOW_POLL_INTERVAL_S": 0.2,
        "GRIDFLOW_TICK_S": 3600,  # tests tick the escalation clock themselves
        "GRIDFLOW_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
        "GRIDFLOW_METRICS_TOKEN": METRICS_TOKEN,
        "max_workers": 10,
    }


@pytest.fixture
def run_services(
    container_factory: Any, service_config: dict[str, Any], database_url: str | None
) -> Iterator[Any]:
    """Start service classes in this process (optionally on a shared fake clock); they are
    killed before the test's database and vhost go away."""
    started: list[Any] = []

    def start(*classes: type, clock: Any = None, config: dict[str, Any] | None = None) -> dict:
        containers = start_services(
            container_factory, config or service_config, *classes, clock=clock
        )
        started.extend(containers.values())
        return containers

    yield start
    for thread in [eventlet.spawn(c.kill) for c in started]:
        thread.wait()


@pytest.fixture
def api(http_port: int, service_config: dict[str, Any]) -> Iterator[requests.Session]:
    """An HTTP session against the in-process intake service, holding an admin API key
    (issued into intake's database at the first request). ``api.key(role, **scope)``
    issues another; ``headers={"Authorization": None}`` sends none."""

    class Api(requests.Session):
        def key(self, role: str = "admin", **scope: Any) -> str:
            return issue_key(service_config["DATABASE_URL"], service_config["GRIDFLOW_VAR_DIR"],
                             role, **scope)

        def auth_header(self) -> dict[str, str]:
            """The session's own (admin) key as a header, for a request made elsewhere."""
            if "Authorization" not in self.headers:
                self.headers.update(bearer(self.key()))
            return {"Authorization": self.headers["Authorization"]}

        def request(self, method: str, url: str, *a: Any, **kw: Any) -> requests.Response:
            kw.setdefault("timeout", 10)
            self.auth_header()
            return super().request(method, f"http://127.0.0.1:{http_port}{url}", *a, **kw)

    with Api() as session:
        yield session


@pytest.fixture
def amqp_uri_pika(rabbit_config: dict[str, Any]) -> Iterator[str]:
    """The test vhost's URL in the form pika understands. The broker users that ``gridflow
    up`` provisions in the vhost (named ``<vhost>.…``) are deleted afterwards."""
    uri = rabbit_config["AMQP_URI"].replace("pyamqp://", "amqp://", 1)
    yield uri
    from support import delete_broker_users

    delete_broker_users(rabbit_config["vhost"])


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests configure services explicitly; the developer's environment must not leak in."""
    keep = ("GRIDFLOW_TEST_PG_URL", "GRIDFLOW_TEST_DATABASES")
    for key in list(os.environ):
        ours = key.startswith("GRIDFLOW_") or key in ("AMQP_URI", "DATABASE_URL")
        if ours and key not in keep:
            monkeypatch.delenv(key, raising=False)
