"""Helpers shared by the service and end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import kombu
import requests
import yaml
from nameko.testing.services import replace_dependencies
from nameko.testing.utils import find_free_port
from sqlalchemy import Engine, select

from shared.clock import FakeClock
from shared.db import make_engine, service_database_url
from shared.events import Event, make_event
from shared.grid import GridRegistry

PG_ADMIN_URL = os.environ.get(
    "GRIDFLOW_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_BACKENDS = [
    b.strip()
    for b in os.environ.get("GRIDFLOW_TEST_DATABASES", "sqlite,postgresql").split(",")
    if b.strip()
]
DEMO_CELL = "511802001001101"  # 通工小区, 桐梓林社区, 青江街道
DEMO_BUILDING = "511802001001101001"

T = TypeVar("T")
DATA = Path(__file__).parent / "data"


def four_level_grid() -> GridRegistry:
    """雨城区 as a 4-level grid (no areas); 通工小区 is cell 511802001001001."""
    return GridRegistry.from_dict(yaml.safe_load((DATA / "district_4level.yaml").read_text()))


def wait_for(
    fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``fn`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def report(report_id: str, category: str = "E0402", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "report_id": report_id,
        "category": category,
        "grid_code": DEMO_CELL,
        "description": "消防通道被私家车堵塞",
        "reporter": {
            "kind": "grid_worker",
            "id": "gw-0001",
            "name": "邓海燕",
            "phone": "13800000001",
        },
    }
    body.update(overrides)
    return body


REPORTED_AT = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


def reported_event(n: int, description: str = "暴露垃圾") -> Event:
    """A valid ``case.reported`` of case ``20261123-<n>`` (暴露垃圾 in the demo cell)."""
    return make_event(
        "case.reported",
        f"20261123-{n:06d}",
        {
            "report_id": f"r-{n}",
            "case": {
                "category": "E0101",
                "description": description,
                "location": {"grid_code": DEMO_CELL},
                "reporter": {"kind": "grid_worker"},
                "reported_at": REPORTED_AT,
            },
        },
        producer="intake",
        at=REPORTED_AT,
    )


@contextmanager
def column_reader(
    service_config: dict[str, Any], service: str, column: Any
) -> Iterator[Callable[[], list[Any]]]:
    """A function reading ``column`` of a test service's table, in primary-key order (the
    service's own SQLite file or PostgreSQL schema); the engine is disposed afterwards."""
    url = service_database_url(
        service, service_config["DATABASE_URL"], service_config["GRIDFLOW_VAR_DIR"]
    )
    engine: Engine | None = None

    def read() -> list[Any]:
        nonlocal engine
        engine = engine or make_engine(url, schema=service, pool_size=2)
        with engine.connect() as conn:
            return list(conn.scalars(select(column).order_by(*column.table.primary_key)))

    yield read
    if engine is not None:
        engine.dispose()


def issue_key(database_url: str | None, var_dir: str | Path, role: str = "admin", *,
              client: str = "tests", **scope: Any) -> str:
    """An API key of ``role`` in intake's database (its file or schema; made if missing),
    as ``gridflow keys issue`` would: the token a client sends."""
    from services.intake import keys

    with keys.database(database_url, var_dir) as s:
        _, token = keys.issue(s, client=client, role=role, by="tests", now=datetime.now(UTC),
                              **scope)
    return token


class BaseUrlSession(requests.Session):
    """A requests session whose URLs are paths under ``base``, with a 10 s timeout."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def request(self, method: str, url: str, *a: Any, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 10)
        return super().request(method, self.base + url, *a, **kw)


def stop_processes(procs: Iterable[Any], timeout: float = 20) -> None:
    """SIGTERM every process still running, then wait; one that does not stop in
    ``timeout`` is killed (its exit, -9, then shows as a bad one)."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_and_read(proc: Any, timeout: float = 40) -> str:
    """SIGTERM a ``gridflow up`` (SIGKILL would leave its children running) and return
    what it printed; killed only if it does not stop in ``timeout``."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=timeout)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def start_services(
    container_factory: Any,
    config: dict[str, Any],
    *service_classes: type,
    clock: FakeClock | None = None,
) -> dict[str, Any]:
    """Start services in this process, sharing one fake clock when given. Intake listens
    on the config's WEB_SERVER_ADDRESS; any other service with HTTP entrypoints (escalation's
    health) gets a free port of its own, in ``container.config``."""
    containers = {}
    for cls in service_classes:
        own = config
        if cls.name != "intake":
            own = {**config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{find_free_port()}"}
        container = container_factory(cls, own)
        if clock is not None:
            replace_dependencies(container, clock=clock)
        container.start()
        containers[cls.name] = container
    return containers


RABBIT_API = "http://127.0.0.1:15672"


def vhost(name: str, create: bool, api: str = RABBIT_API) -> None:
    """Create ``name`` (with guest allowed everything), or delete it."""
    url, auth = f"{api}/api/vhosts/{name}", ("guest", "guest")
    if not create:
        requests.delete(url, auth=auth, timeout=10)
        return
    requests.put(url, auth=auth, timeout=10).raise_for_status()
    requests.put(f"{api}/api/permissions/{name}/guest", auth=auth, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()


def delete_broker_users(vhost: str, api: str = RABBIT_API) -> None:
    """Delete the broker users provisioned in a test vhost (``<vhost>.dept.fire``, …)."""
    auth = ("guest", "guest")
    for user in requests.get(f"{api}/api/users", auth=auth, timeout=10).json():
        if user["name"].startswith(f"{vhost}."):
            requests.delete(f"{api}/api/users/{quote(user['name'], safe='')}", auth=auth,
                            timeout=10)


def get_messages(amqp_uri: str, queue: str, *, max_count: int = 1000) -> list[Any]:
    """Take every message now in ``queue`` (acked), as py-amqp messages."""
    out = []
    with kombu.Connection(amqp_uri) as conn:
        channel = conn.channel()
        while len(out) < max_count:
            msg = channel.basic_get(queue, no_ack=True)
            if msg is None:
                break
            out.append(msg)
    return out


def message_json(msg: Any) -> dict[str, Any]:
    return json.loads(msg.body)


def queue_depth(amqp_uri: str, queue: str) -> int:
    with kombu.Connection(amqp_uri) as conn:
        return conn.channel().queue_declare(queue, passive=True).message_count


def saw(event_type: str) -> Callable[[Any, Any, Any], bool]:
    """An ``entrypoint_waiter`` callback: done once a worker handled an event of this type."""

    def callback(worker_ctx: Any, result: Any, exc_info: Any) -> bool:
        return exc_info is None and any(e.type == event_type for e in worker_ctx.args[0])

    return callback


def case_view(api: Any, case_id: str) -> dict[str, Any]:
    """GET a case from intake's API; it must exist."""
    r = api.get(f"/api/v1/cases/{case_id}")
    assert r.status_code == 200, r.text
    return r.json()


def fresh(case: Any) -> Any:
    """Forget what a case aggregate recorded and queued so far: only what comes next counts."""
    case.new_entries.clear()
    case.pending_events.clear()
    return case


def kinds(case: Any) -> list[str]:
    """The kinds of the timeline entries a case aggregate recorded since loaded or fresh."""
    return [e.kind for e in case.new_entries]


def event_types(case: Any) -> list[str]:
    """The types of the events a case aggregate queued."""
    return [t for t, _ in case.pending_events]
