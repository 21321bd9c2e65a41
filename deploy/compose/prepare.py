"""Prepare a shared PostgreSQL and a RabbitMQ cluster before gridflow's services start.

Run once before the services (docker compose's ``prepare`` service) or before each pod
(the Kubernetes Deployments' ``prepare`` init container); safe to run again and
concurrently:

1. each service's PostgreSQL schema and tables, one service after the other under an
   advisory lock — N replicas starting at once on an empty database would otherwise race
   on ``CREATE SCHEMA`` / ``CREATE TABLE`` and some would exit on the duplicate;
2. waits until the RabbitMQ cluster has ``PREPARE_RABBITMQ_NODES`` (default 3) running
   nodes (management API: ``GRIDFLOW_RABBIT_ADMIN_URL``), then declares the topology
   (``shared.amqp.topology``): a quorum queue gets a member on every node that is in the
   cluster when it is declared, so declaring before the cluster is whole would leave
   queues on one node, without replication.

Reads AMQP_URI, DATABASE_URL (or <SERVICE>_DATABASE_URL), GRIDFLOW_DATA_DIR like the
services; refuses to run without a PostgreSQL URL (replicas cannot share SQLite files).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import sys
import time
import urllib.parse
import urllib.request
import warnings
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")

import kombu  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from gridflow import SERVICES  # noqa: E402
from shared.amqp import topology  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.db import create_tables, make_engine  # noqa: E402
from shared.extensions.store import Store  # noqa: E402
from shared.reference import load_reference  # noqa: E402

WAIT_S = float(os.environ.get("PREPARE_WAIT_S", "300"))
NODES = int(os.environ.get("PREPARE_RABBITMQ_NODES", "3"))
T = TypeVar("T")
LOCK = zlib.crc32(b"gridflow.prepare")  # pg_advisory_lock's key


def say(text_: str) -> None:
    print(f"[prepare] {text_}", flush=True)


def retry(what: str, fn: Callable[..., T], *args: Any) -> T:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return fn(*args)
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"[prepare] gave up on {what} after {WAIT_S:g} s: {exc}") from exc
            detail = str(exc).splitlines()[0] if str(exc) else repr(exc)
            say(f"waiting for {what}: {detail}")
            time.sleep(3)


def service_store(name: str) -> Store:
    module, _, attr = SERVICES[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return next(v for k in dir(cls) if isinstance(v := getattr(cls, k), Store))


def database_url(name: str) -> str:
    url = Settings.from_config({}, name).database_url
    if not url or make_url(url).get_backend_name() != "postgresql":
        raise SystemExit(f"[prepare] {name}: DATABASE_URL must point at PostgreSQL "
                         "(replicas cannot share SQLite files)")
    return str(url)


def prepare_database() -> None:
    urls = {name: database_url(name) for name in SERVICES}
    for url in sorted(set(urls.values())):
        lock_engine = create_engine(url, pool_size=1)
        with retry("PostgreSQL", lock_engine.connect) as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK})
            try:
                for name, own in urls.items():
                    if own != url:
                        continue
                    engine = make_engine(own, schema=name, pool_size=1)
                    try:
                        create_tables(engine, service_store(name).metadata)
                    finally:
                        engine.dispose()
                    say(f"schema {name}: tables ready")
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK})
        lock_engine.dispose()


def running_nodes(admin_url: str) -> list[str]:
    parts = urllib.parse.urlsplit(admin_url)
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "", "", ""))
    auth = base64.b64encode(f"{urllib.parse.unquote(parts.username or 'guest')}:"
                            f"{urllib.parse.unquote(parts.password or 'guest')}".encode())
    request = urllib.request.Request(f"{base}/api/nodes?columns=name,running",
                                     headers={"Authorization": f"Basic {auth.decode()}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        nodes = json.loads(resp.read())
    up = [n["name"] for n in nodes if n.get("running")]
    if len(up) < NODES:
        raise RuntimeError(f"{len(up)} of {NODES} RabbitMQ nodes running ({', '.join(up)})")
    return up


def prepare_broker() -> None:
    settings = Settings.from_config({})
    admin_url = os.environ.get("GRIDFLOW_RABBIT_ADMIN_URL")
    if admin_url:
        up = retry(f"{NODES} RabbitMQ nodes", running_nodes, admin_url)
        say(f"RabbitMQ cluster: {', '.join(sorted(up))}")
    else:
        say("GRIDFLOW_RABBIT_ADMIN_URL unset: not checking the cluster's size")
    departments = sorted(load_reference(settings.data_dir).catalogue.departments)

    def declare() -> int:
        with kombu.Connection(settings.amqp_uri, connect_timeout=10) as conn:
            topology.declare(conn.channel(), departments)
        return len(topology.queues(departments))

    say(f"topology declared: {retry('RabbitMQ (AMQP)', declare)} queues")


def main() -> int:
    prepare_database()
    prepare_broker()
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
