"""The four pipeline services as separate processes, as a district would run them, on a fresh
vhost and database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import Processes, distinct_ports, running

from gridflow import PIPELINE


@pytest.fixture
def system(
    rabbit_config: dict,
    database_url: str | None,
    tmp_path: Path,
    http_port: int,
    amqp_uri_pika: str,
) -> Iterator[Processes]:
    base_url = f"http://127.0.0.1:{http_port}"
    escalation, routing, notify = distinct_ports(3, taken=[http_port])
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AMQP_URI": amqp_uri_pika,
        "GRIDFLOW_VAR_DIR": str(tmp_path / "var"),
        "GRIDFLOW_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
        "GRIDFLOW_PUBLIC_URL": base_url,
        "GRIDFLOW_ESCALATION_HTTP_ADDRESS": f"127.0.0.1:{escalation}",
        "GRIDFLOW_ROUTING_HTTP_ADDRESS": f"127.0.0.1:{routing}",
        "GRIDFLOW_NOTIFY_HTTP_ADDRESS": f"127.0.0.1:{notify}",
        **({"DATABASE_URL": database_url} if database_url else {}),
    }
    with running(env, tmp_path / "logs", base_url, PIPELINE, amqp_uri=amqp_uri_pika) as procs:
        yield procs


