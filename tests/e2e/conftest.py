"""The four pipeline services as separate processes, as a district would run them, on a fresh
vhost and database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from nameko.testing.utils import find_free_port
from processes import Processes, declared, healthy

from gridflow import PIPELINE
from support import wait_for


@pytest.fixture
def system(
    rabbit_config: dict,
    database_url: str | None,
    tmp_path: Path,
    http_port: int,
    amqp_uri_pika: str,
) -> Iterator[Processes]:
    base_url = f"http://127.0.0.1:{http_port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AMQP_URI": amqp_uri_pika,
        "GRIDFLOW_VAR_DIR": str(tmp_path / "var"),
        "GRIDFLOW_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
        "GRIDFLOW_PUBLIC_URL": base_url,
        "GRIDFLOW_ESCALATION_HTTP_ADDRESS": f"127.0.0.1:{find_free_port()}",
        "GRIDFLOW_ROUTING_HTTP_ADDRESS": f"127.0.0.1:{find_free_port()}",
        "GRIDFLOW_NOTIFY_HTTP_ADDRESS": f"127.0.0.1:{find_free_port()}",
        **({"DATABASE_URL": database_url} if database_url else {}),
    }
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    procs = Processes(env, log_dir, base_url)
    for name in PIPELINE:
        procs.start(name)
    try:
        wait_for(lambda: healthy(base_url), timeout=30, what="intake health")
        wait_for(lambda: declared(amqp_uri_pika), timeout=30, what="the broker topology")
        yield procs
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop()
    crashed = {n: p.returncode for n, p in procs.procs.items() if p.returncode not in (0, -15)}
    assert not crashed, f"services exited badly: {crashed}\n{procs.logs()}"


