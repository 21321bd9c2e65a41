"""Services reconnect on their own after losing the broker or the database, and their
outboxes drain afterwards, in order per case.

The four services run in this process; their broker (and, on PostgreSQL, their database)
connections go through a ``FaultProxy`` that the test cuts for a few seconds. Nothing is
restarted: the same containers must carry on once the line is back. What reached the
departments is read straight from the real broker.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import eventlet
import kombu
import pytest
from eventlet.event import Event as GreenEvent
from faultkit import backlog, one_backend, only_on, store_of
from nameko.rpc import RpcConsumer
from nameko.testing.services import entrypoint_waiter
from proxy import FaultProxy
from sqlalchemy import select

from services.escalation.service import EscalationService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared.amqp import topology as topo
from support import get_messages, message_json, report, wait_for

ALL = (IntakeService, RoutingService, EscalationService, NotifyService)
CATEGORY = "E0801"  # 独居老人照护: civil affairs alone, never a duplicate of another report
DEPARTMENT_QUEUE = topo.dispatch_queue("civil_affairs")
OUTAGE_S = 2.0


class Received:
    """Every message taken from some queues of the real broker, in arrival order."""

    def __init__(self, amqp_uri: str, *queues: str) -> None:
        self.amqp_uri = amqp_uri
        self.queues = queues
        self.messages: dict[str, list[Any]] = defaultdict(list)

    def poll(self) -> Received:
        for q in self.queues:
            self.messages[q].extend(get_messages(self.amqp_uri, q))
        return self

    def ids(self, queue: str, type_: str | None = None) -> list[str]:
        return [
            m.properties["message_id"]
            for m in self.messages[queue]
            if type_ is None or m.properties.get("type") == type_
        ]


def post_reports(api: Any, prefix: str, n: int) -> dict[str, str]:
    """POST ``n`` reports; every one must be accepted. Returns report id → case id."""
    out = {}
    for i in range(n):
        rid = f"{prefix}-{i}"
        r = api.post("/api/v1/reports", json=report(rid, CATEGORY))
        assert r.status_code == 201, (rid, r.status_code, r.text)
        out[rid] = r.json()["case_id"]
    return out


def assigned_cases(received: Received) -> Counter[str]:
    """case id → how many distinct case.assigned messages reached the department."""
    by_case: dict[str, set[str]] = defaultdict(set)
    for m in received.messages[DEPARTMENT_QUEUE]:
        if m.properties.get("type") == "case.assigned":
            by_case[message_json(m)["case_id"]].add(m.properties["message_id"])
    return Counter({case: len(ids) for case, ids in by_case.items()})


def alive(containers: dict[str, Any]) -> bool:
    return not any(c._died.ready() for c in containers.values())


def _declare_sink(amqp_uri: str, name: str) -> None:
    """A queue that gets a copy of every internal event."""
    with kombu.Connection(amqp_uri) as conn:
        ch = conn.channel()
        topo.declare(ch, [])
        ch.queue_declare(name, durable=True, auto_delete=False)
        ch.queue_bind(name, topo.EVENTS_EXCHANGE, "#")


def test_broker_lost_then_everything_is_delivered_once_and_in_order(
    broker_proxy: FaultProxy, faulty: Any, api: Any, rabbit_config: dict[str, Any]
) -> None:
    """While the broker is cut, reports keep coming (intake keeps them and their outbox
    rows: 201) and a department works one case (ack, progress, resolve: one event each,
    in intake's outbox). After the restore, with no service restarted, every case reaches
    its department once, every outbox empties, and the case's events left in id order."""
    amqp = rabbit_config["AMQP_URI"]
    sink = "test.faults.sink"
    _declare_sink(amqp, sink)
    containers = faulty(*ALL)
    received = Received(amqp, DEPARTMENT_QUEUE, sink)

    before = post_reports(api, "before", 2)
    wait_for(lambda: len(assigned_cases(received.poll())) == 2, what="the first two dispatched")
    worked = before["before-0"]
    base = f"/api/v1/cases/{worked}/assignments/civil_affairs"

    broker_proxy.cut()
    during = post_reports(api, "during", 3)  # kept: the report and its outbox rows
    assert api.post(f"{base}/ack", json={"actor": "民政 李"}).status_code == 200
    for i in range(3):
        r = api.post(f"{base}/progress", json={"note": f"第{i + 1}次上门", "actor": "民政 李"})
        assert r.status_code == 200, r.text
    during.update(post_reports(api, "late", 2))
    r = api.post(f"{base}/resolve", json={"note": "已安排照护"})
    assert r.status_code == 200, r.text
    time.sleep(OUTAGE_S)
    store = store_of(containers["intake"])
    with store.sessions() as s:
        m = store.outbox_model
        queued = list(s.scalars(
            select(m.message_id)
            .where(m.case_id == worked, m.sent_at.is_(None), m.exchange == topo.EVENTS_EXCHANGE)
            .order_by(m.id)
        ))
    assert len(queued) >= 5 and backlog(containers)["intake"] >= len(queued) + 5
    broker_proxy.restore()
    after = post_reports(api, "after", 2)

    cases = {**before, **during, **after}
    expected = set(cases.values())
    wait_for(
        lambda: set(assigned_cases(received.poll())) >= expected,
        timeout=30,
        what="every case dispatched after the broker came back",
    )
    wait_for(lambda: not any(backlog(containers).values()), what="every outbox empty")
    time.sleep(0.5)  # anything sent twice would have arrived by now
    counts = assigned_cases(received.poll())
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), counts  # one assignment message per case
    for rid, case_id in cases.items():
        r = api.get(f"/api/v1/cases/{case_id}")
        assert r.status_code == 200, (rid, r.text)

    first_arrivals = list(dict.fromkeys(m.properties["message_id"]
                                        for m in received.messages[sink]))
    assert [i for i in first_arrivals if i in set(queued)] == queued  # in outbox id order
    assert alive(containers)
    assert broker_proxy.accepted > broker_proxy.open_connections  # they did reconnect


def _unavailable(r: Any) -> bool:
    """A 503 that says what happened, in JSON."""
    body = r.json()
    return (
        r.status_code == 503
        and r.headers["content-type"].startswith("application/json")
        and "storage is unavailable" in " ".join(body["errors"]["_service"])
    )


@only_on("postgresql")
def test_database_lost_answers_503_keeps_every_2xx_and_carries_on(
    pg_proxy: FaultProxy, pg_proxy2: FaultProxy, faulty: Any, api: Any,
    rabbit_config: dict[str, Any],
) -> None:
    """First the pipeline's database line goes (routing, escalation and notify): intake
    still takes reports, routing's handler fails on their events, which wait in the retry
    queues. Then intake's own line goes: it answers 503, saying nothing was kept. After
    both come back, nothing restarted, every accepted report is dispatched once."""
    amqp = rabbit_config["AMQP_URI"]
    containers = {
        **faulty(IntakeService, db_proxy=pg_proxy),
        **faulty(RoutingService, EscalationService, NotifyService, db_proxy=pg_proxy2,
                 GRIDFLOW_TICK_S=0.2),
    }
    received = Received(amqp, DEPARTMENT_QUEUE)
    accepted = post_reports(api, "before", 2)

    pg_proxy2.cut()  # the pipeline's database
    accepted.update(post_reports(api, "pipeline-down", 3))
    pg_proxy.cut()  # and intake's
    refused = []
    deadline = time.monotonic() + OUTAGE_S
    while time.monotonic() < deadline:
        rid = f"intake-down-{len(refused)}"
        r = api.post("/api/v1/reports", json=report(rid, CATEGORY))
        assert _unavailable(r), (r.status_code, r.text)
        assert r.headers.get("Retry-After")
        refused.append(rid)
        time.sleep(0.2)
    assert _unavailable(api.get(f"/api/v1/cases/{accepted['before-0']}"))
    late = set(accepted.values()) - set(assigned_cases(received.poll()))
    assert late  # the reports taken while the pipeline's database was down wait
    pg_proxy.restore()
    pg_proxy2.restore()

    # the first request after the outage is served (stale pooled connections are replaced)
    accepted.update(post_reports(api, "after", 1))
    for rid in refused:  # nothing of them was kept: sent again, each is a new report
        r = api.post("/api/v1/reports", json=report(rid, CATEGORY))
        assert r.status_code == 201, (rid, r.text)
        accepted[rid] = r.json()["case_id"]

    expected = set(accepted.values())
    wait_for(
        lambda: set(assigned_cases(received.poll())) >= expected,
        timeout=30,
        what="every accepted report dispatched after the databases came back",
    )
    wait_for(lambda: not any(backlog(containers).values()), what="every outbox empty")
    counts = assigned_cases(received.poll())
    assert set(counts) == expected and all(n == 1 for n in counts.values()), counts
    wait_for(
        lambda: all(
            api.get(f"/api/v1/cases/{c}").json()["state"] == "dispatched" for c in expected
        ),
        what="every case dispatched in intake's read model",
    )
    with entrypoint_waiter(containers["escalation"], "tick", timeout=10,
                           callback=lambda _w, _r, exc_info: exc_info is None):
        pass  # the clock ticks again
    assert alive(containers)


@only_on("postgresql")
def test_database_that_stops_answering_gets_503_not_a_hung_request(
    pg_proxy: FaultProxy, faulty: Any, api: Any
) -> None:
    """A partition drops packets: connecting gets no answer at all. Under eventlet, psycopg2
    connects asynchronously and libpq's connect_timeout does not apply, so without a timeout
    of our own every request (and the relay, and every consumer) waits forever."""
    containers = faulty(IntakeService, db_proxy=pg_proxy)
    case_id = post_reports(api, "before", 1)["before-0"]
    pg_proxy.cut("blackhole")
    r = api.post("/api/v1/reports", json=report("during", CATEGORY), timeout=15)
    assert _unavailable(r), (r.status_code, r.text)
    assert _unavailable(api.get(f"/api/v1/cases/{case_id}", timeout=15))
    pg_proxy.restore()
    wait_for(
        lambda: api.post("/api/v1/reports", json=report("during", CATEGORY)).status_code == 201,
        timeout=15,
        what="the report accepted once the database answers again",
    )
    assert alive(containers)


@only_on("postgresql")
def test_database_lost_while_a_key_is_looked_up_answers_503(
    pg_proxy: FaultProxy, faulty: Any, api: Any
) -> None:
    """An outage longer than the gate's key cache (GRIDFLOW_KEY_CACHE_S, 0 here): the key's
    lookup meets the lost database before any handler runs; still a 503, nothing kept."""
    faulty(IntakeService, db_proxy=pg_proxy, GRIDFLOW_KEY_CACHE_S=0)
    post_reports(api, "before", 1)
    pg_proxy.cut()
    r = api.post("/api/v1/reports", json=report("during", CATEGORY), timeout=15)
    pg_proxy.restore()
    assert r.headers["content-type"].startswith("application/json"), (r.status_code, r.text)
    assert _unavailable(r), (r.status_code, r.text)


@one_backend
def test_rpc_call_in_flight_when_the_broker_goes_does_not_kill_the_responder(
    broker_proxy: FaultProxy, faulty: Any, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """escalation answers intake's ledger query over RPC. Caught by the outage half way, its
    reply cannot be sent: nameko raised that out of the worker, and the container died."""
    from services.escalation.engine import Engine

    gate, started = GreenEvent(), GreenEvent()
    ledger = Engine.ledger

    def slow_ledger(self: Any, *a: Any, **kw: Any) -> Any:
        if not started.ready():
            started.send()
            gate.wait()
        return ledger(self, *a, **kw)

    replied = GreenEvent()  # the responder tried to send its reply (and gave up)
    handle_result = RpcConsumer.handle_result

    def spy(self: Any, *a: Any, **kw: Any) -> Any:
        try:
            return handle_result(self, *a, **kw)
        finally:
            if not replied.ready():
                replied.send()

    monkeypatch.setattr(Engine, "ledger", slow_ledger)
    monkeypatch.setattr(RpcConsumer, "handle_result", spy)
    containers = faulty(IntakeService, EscalationService)
    call = eventlet.spawn(api.get, "/api/v1/supervision", timeout=30)
    started.wait()
    broker_proxy.cut()
    eventlet.sleep(0.3)
    gate.send()  # the answer is ready; the line is not
    replied.wait()
    eventlet.sleep(0.2)
    assert alive(containers), "a reply that could not be sent killed the service"
    broker_proxy.restore()

    def ledger_served() -> bool:
        return api.get("/api/v1/supervision", timeout=15).status_code == 200

    wait_for(
        lambda: not alive(containers) or ledger_served(),
        timeout=40,
        what="the ledger over RPC after the broker came back",
    )
    assert alive(containers), "a reply that could not be sent killed the service"
    call.wait()  # the caught call is over (answered late, or failed with a 503 or a 500)
