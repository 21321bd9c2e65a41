"""The reliable ``@event_handler`` against the real broker, on SQLite and PostgreSQL.

A probe service consumes ``case.reported`` from the routing service's quorum queue (declared
and bound by the topology every service declares at start). The test publishes messages
itself and scripts the handler: fail N times, always fail, raise PoisonEvent, or an
"outage" (a transient database error) that the test ends.

What the consumer did is read from the broker (the queue, its dead-letter queue, the retry
queues) and from the probe's own table of handled events; a spy on the consumer records
every delivery (with its headers) and every ack.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import amqp
import eventlet
import kombu
import pytest
from sqlalchemy import Integer, String
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.amqp import topology as topo
from shared.events import Event, make_event
from shared.extensions.consumer import EventQueueConsumer, PoisonEvent, event_handler
from shared.extensions.store import Store
from shared.reference import load_reference
from shared.unit_of_work import messaging_tables
from support import DEMO_CELL, column_reader, get_messages, queue_depth, reported_event, wait_for

QUEUE = topo.service_queue("routing")  # a declared quorum queue bound to case.reported
DLQ = topo.dead_letter_queue(QUEUE)
RETRY_QUEUES = [f"gridflow.retry.{d}s" for d in topo.RETRY_DELAYS_S]
NOW = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


# -- the probe service ------------------------------------------------------------------------
class ProbeBase(DeclarativeBase):
    pass


ProbeOutbox, ProbeInbox = messaging_tables(ProbeBase)


class Handled(ProbeBase):
    """One row per event the handler committed (no unique key: duplicates would show)."""

    __tablename__ = "handled"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))
    batch: Mapped[int] = mapped_column(Integer)


# What the handler does, per event id; reset before every test.
fail_times: dict[str, list[BaseException]] = {}  # raise these, one per call, then succeed
fail_always: dict[str, BaseException] = {}  # raise this until the test removes it
calls: list[list[str]] = []  # the event ids of every batch the handler was called with


class Probe:
    name = "probe"

    db = Store(ProbeBase.metadata, ProbeOutbox, ProbeInbox)

    @event_handler("case.reported", queue=QUEUE)
    def on_reported(self, events: list[Event]) -> None:
        calls.append([e.event_id for e in events])
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "probe.on_reported"):
                tx.session.add(Handled(event_id=ev.event_id, batch=len(events)))
                tx.session.flush()  # the effect is written before the handler fails
                if ev.event_id in fail_always:
                    raise fail_always[ev.event_id]
                if fail_times.get(ev.event_id):
                    raise fail_times[ev.event_id].pop(0)


@pytest.fixture(autouse=True)
def _script() -> Iterator[None]:
    fail_times.clear()
    fail_always.clear()
    calls.clear()
    yield
    fail_always.clear()  # let nothing loop on while the containers are killed


# -- watching the consumer --------------------------------------------------------------------
@dataclass
class Delivery:
    at: float
    message_id: str
    headers: dict[str, Any]
    exchange: str


@dataclass
class Trace:
    deliveries: list[Delivery] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)
    # for each ack, the event ids committed in the probe's table at that moment
    committed_at_ack: list[list[str]] = field(default_factory=list)

    def of(self, message_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.message_id == message_id]


@pytest.fixture
def handled(service_config: dict[str, Any]) -> Iterator[Callable[[], list[str]]]:
    """The event ids in the probe's table of handled events, in commit order."""
    with column_reader(service_config, "probe", Handled.event_id) as read:
        yield read


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch, handled: Callable[[], list[str]]) -> Trace:
    t = Trace()
    on_message, ack = EventQueueConsumer._on_message, EventQueueConsumer.ack

    def spy_on_message(self: EventQueueConsumer, queue_name: str, message: Any) -> None:
        t.deliveries.append(
            Delivery(
                at=time.monotonic(),
                message_id=str((message.properties or {}).get("message_id")),
                headers=dict(message.headers or {}),
                exchange=(message.delivery_info or {}).get("exchange", ""),
            )
        )
        on_message(self, queue_name, message)

    def spy_ack(self: EventQueueConsumer, message: Any) -> None:
        t.committed_at_ack.append(handled())
        t.acks.append(str((message.properties or {}).get("message_id")))
        ack(self, message)

    monkeypatch.setattr(EventQueueConsumer, "_on_message", spy_on_message)
    monkeypatch.setattr(EventQueueConsumer, "ack", spy_ack)
    return t


@pytest.fixture
def probe(run_services: Any, service_config: dict[str, Any], trace: Trace) -> Callable[..., Any]:
    """Start the probe; keyword arguments override settings (GRIDFLOW_MAX_ATTEMPTS is 2)."""

    def start(**settings: Any) -> Any:
        config = {**service_config, "GRIDFLOW_MAX_ATTEMPTS": 2, **settings}
        return run_services(Probe, config=config)["probe"]

    return start


# -- messages ---------------------------------------------------------------------------------
def reported(n: int) -> Event:
    return reported_event(n)


_REF = load_reference(Path(__file__).resolve().parents[2] / "deploy" / "demo")
POLICY = _REF.policy.snapshot(_REF.catalogue.get("E0101"), "normal", _REF.grid)


def routed(n: int) -> Event:
    ev = reported(n)
    return make_event(
        "case.routed",
        ev.case_id,
        {
            "case": ev.data["case"],
            "tier": {"tier": "compound", "code": DEMO_CELL},
            "assignments": [
                {
                    "department": "sanitation",
                    "role": "lead",
                    "report_in_due": NOW,
                    "resolve_due": NOW,
                }
            ],
            "policy": POLICY,
            "routed_at": NOW,
        },
        producer="routing",
        at=NOW,
    )


@dataclass
class Raw:
    body: bytes
    message_id: str
    type: str = "case.reported"
    exchange: str = topo.EVENTS_EXCHANGE
    routing_key: str = "case.reported"


def raw(ev: Event) -> Raw:
    return Raw(ev.to_json(), ev.event_id, ev.type, routing_key=ev.type)


def doctored(ev: Event, change: Callable[[dict[str, Any]], Any], **kw: Any) -> Raw:
    """``ev``'s envelope, changed after validation (as a buggy producer would send it)."""
    env = ev.envelope()
    change(env)
    return Raw(json.dumps(env, ensure_ascii=False).encode(), ev.event_id, ev.type, **kw)


def send(amqp_uri: str, *messages: Raw) -> None:
    """Publish with confirms, as a producer would: persistent, JSON, message_id and type."""
    with kombu.Connection(amqp_uri) as conn:
        channel = conn.channel()
        topo.declare(channel, [])  # so messages sent before the probe starts are queued
        for m in messages:
            channel.basic_publish_confirm(  # waits for the broker's confirm
                amqp.Message(
                    m.body,
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=m.message_id,
                    type=m.type,
                    application_headers={"schema_version": 1},
                ),
                exchange=m.exchange,
                routing_key=m.routing_key,
                mandatory=True,
            )


def collect(amqp_uri: str, queue: str, count: int, timeout: float = 10.0) -> dict[str, Any]:
    """Take ``count`` messages from ``queue`` (waiting for them), by message_id."""
    got: dict[str, Any] = {}

    def enough() -> bool:
        for msg in get_messages(amqp_uri, queue):
            got[msg.properties["message_id"]] = msg
        return len(got) >= count

    wait_for(enough, timeout=timeout, what=f"{count} messages in {queue}")
    return got


def assert_settled(trace: Trace, amqp_uri: str, container: Any = None) -> None:
    """Every delivery was acked once, and nothing waits in the queue, its DLQ or a retry queue.

    With ``container``, stop it first: a message it left unacked goes back to the queue and
    shows in its depth (a graceful stop takes nameko ~2 s, so only some tests do it).
    """
    if container is not None:
        container.stop()
    assert Counter(trace.acks) == Counter(d.message_id for d in trace.deliveries)
    depths = {q: queue_depth(amqp_uri, q) for q in [QUEUE, DLQ, *RETRY_QUEUES]}
    assert depths == dict.fromkeys(depths, 0)


# -- the tests --------------------------------------------------------------------------------
def test_valid_event_is_handled_once_committed_then_acked(
    probe: Callable[..., Any], amqp_uri: str, trace: Trace, handled: Callable[[], list[str]]
) -> None:
    container = probe()
    ev = reported(1)
    send(amqp_uri, raw(ev))

    wait_for(lambda: trace.acks, what="the ack")
    assert calls == [[ev.event_id]]
    assert trace.acks == [ev.event_id]
    assert trace.committed_at_ack == [[ev.event_id]]  # the effect was committed before the ack
    assert handled() == [ev.event_id]
    assert_settled(trace, amqp_uri, container)  # nothing unacked, retried or dead-lettered
    assert calls == [[ev.event_id]]


def test_same_message_delivered_twice_is_handled_once(
    probe: Callable[..., Any], amqp_uri: str, trace: Trace, handled: Callable[[], list[str]]
) -> None:
    ev = reported(1)
    send(amqp_uri, raw(ev), raw(ev))  # queued before the probe starts: one batch
    probe(GRIDFLOW_BATCH_LINGER_MS=300)
    wait_for(lambda: len(trace.acks) == 2, what="both copies acked")
    assert calls == [[ev.event_id, ev.event_id]]
    assert handled() == [ev.event_id]

    send(amqp_uri, raw(ev))  # a redelivery long after the first was committed
    wait_for(lambda: len(trace.acks) == 3, what="the third copy acked")
    assert calls[-1] == [ev.event_id]
    assert handled() == [ev.event_id]
    assert_settled(trace, amqp_uri)


def test_messages_that_are_not_valid_events_are_dead_lettered_with_the_reason(
    probe: Callable[..., Any], amqp_uri: str, trace: Trace, handled: Callable[[], list[str]]
) -> None:
    container = probe()
    direct = {"exchange": "", "routing_key": QUEUE}  # straight into the queue
    poison = {
        "not JSON": Raw(b'{"event_id": "x", ', "bad-json"),
        "not a JSON object": Raw(b"[1, 2, 3]", "json-array"),
        "envelope: {'case_id'": doctored(reported(2), lambda env: env.pop("case_id")),
        "schema_version 2 is not supported": doctored(
            reported(3), lambda env: env.update(schema_version=2)
        ),
        "unknown event type 'case.teleported'": doctored(
            reported(4), lambda env: env.update(type="case.teleported"), **direct
        ),
        "no handler for case.routed on gridflow.routing": doctored(
            routed(5), lambda env: None, **direct
        ),
        "'grid_code': ['Length must be 15.']": doctored(
            reported(6), lambda env: env["data"]["case"]["location"].update(grid_code="12345")
        ),
    }
    send(amqp_uri, *poison.values())

    dead = collect(amqp_uri, DLQ, len(poison))
    assert set(dead) == {m.message_id for m in poison.values()}
    for reason, sent in poison.items():
        msg = dead[sent.message_id]
        headers = msg.headers
        assert reason in headers[topo.H_REASON], (reason, headers[topo.H_REASON])
        assert headers[topo.H_QUEUE] == QUEUE
        assert headers[topo.H_SERVICE] == "probe"
        assert headers[topo.H_EXCHANGE] == sent.exchange
        assert headers[topo.H_ROUTING_KEY] == sent.routing_key
        assert datetime.fromisoformat(headers[topo.H_FAILED_AT]).tzinfo is not None
        assert msg.body == sent.body  # the message as it came, for inspection and replay
        assert msg.properties["type"] == sent.type
        assert msg.delivery_info["routing_key"] == QUEUE
        assert topo.H_ATTEMPTS not in headers  # never retried
    assert calls == [] and handled() == []  # the handler never saw them
    assert len(trace.deliveries) == len(poison)
    assert_settled(trace, amqp_uri, container)


def test_handler_raising_poison_event_is_dead_lettered_at_once(
    probe: Callable[..., Any], amqp_uri: str, trace: Trace, handled: Callable[[], list[str]]
) -> None:
    probe(GRIDFLOW_MAX_ATTEMPTS=5)
    ev = reported(1)
    fail_always[ev.event_id] = PoisonEvent("category E9999 is not in the catalogue")
    send(amqp_uri, raw(ev))

    msg = collect(amqp_uri, DLQ, 1)[ev.event_id]
    assert msg.headers[topo.H_REASON] == "PoisonEvent: category E9999 is not in the catalogue"
    assert msg.headers[topo.H_QUEUE] == QUEUE
    assert msg.body == ev.to_json()
    assert calls == [[ev.event_id]]  # not retried
    assert handled() == []  # its transaction was rolled back
    assert_settled(trace, amqp_uri)


def test_poison_event_in_a_batch_holds_back_none_of_the_good_ones(
    probe: Callable[..., Any], amqp_uri: str, trace: Trace, handled: Callable[[], list[str]]
) -> None:
    good1, bad, good2, good3 = (reported(n) for n in range(1, 5))
    fail_always[bad.event_id] = PoisonEvent("impossible")
    send(amqp_uri, raw(good1), raw(bad), raw(good2), raw(good3))
    probe(GRIDFLOW_BATCH_LINGER_MS=300)

    msg = collect(amqp_uri, DLQ, 1)[bad.event_id]
    assert msg.headers[topo.H_REASON] == "PoisonEvent: impossible"
    wait_for(lambda: len(trace.acks) == 4, what="every message settled")
    good = [good1.event_id, good2.event_id, good3.event_id]
    assert sorted(handled()) == sorted(good)  # each exactly once
    batch = [good1.event_id, bad.event_id, good2.event_id, good3.event_id]
    assert calls[0] == batch  # one batch, which fails
    assert sorted(calls[1:]) == sorted([i] for i in batch)  # then each on its own
    assert_settled(trace, amqp_uri)
    assert get_messages(amqp_uri, DLQ) == []


def test_failing_handler_is_retried_with_backoff_until_it_succeeds(
    probe: Callable[..., Any], amqp_uri: str, trace: Trace, handled: Callable[[], list[str]]
) -> None:
    probe(GRIDFLOW_MAX_ATTEMPTS=3)
    ev = reported(1)
    fail_times[ev.event_id] = [RuntimeError("flaky 1"), RuntimeError("flaky 2")]
    send(amqp_uri, raw(ev))

    wait_for(lambda: handled(), timeout=12, what="the third attempt to succeed")
    wait_for(lambda: len(trace.acks) == 3, what="the last ack")
    first, second, third = trace.of(ev.event_id)
    assert [d.headers.get(topo.H_ATTEMPTS) for d in (first, second, third)] == [None, 1, 2]
    assert second.headers[topo.H_REASON] == "RuntimeError: flaky 1"
    assert third.headers[topo.H_REASON] == "RuntimeError: flaky 2"
    # back through the retry queues: first the 1 s one, then the 5 s one
    assert second.headers["x-death"][0]["queue"] == "gridflow.retry.1s"
    assert third.headers["x-death"][0]["queue"] == "gridflow.retry.5s"
    assert 0.9 <= second.at - first.at < 3
    assert 4.9 <= third.at - second.at < 8
    assert second.headers[topo.H_EXCHANGE] == topo.EVENTS_EXCHANGE  # where it first came from
    assert handled() == [ev.event_id]
    assert len(calls) == 3
    assert_settled(trace, amqp_uri)


def test_handler_that_always_fails_is_dead_lettered_after_max_attempts(
    probe: Callable[..., Any], amqp_uri: str, trace: Trace, handled: Callable[[], list[str]]
) -> None:
    container = probe(GRIDFLOW_MAX_ATTEMPTS=2)
    ev = reported(1)
    fail_always[ev.event_id] = RuntimeError("no such department")
    send(amqp_uri, raw(ev))

    msg = collect(amqp_uri, DLQ, 1)[ev.event_id]
    assert msg.headers[topo.H_REASON] == "failed 2 times; last: RuntimeError: no such department"
    assert msg.headers[topo.H_ATTEMPTS] == 2
    assert msg.headers[topo.H_QUEUE] == QUEUE
    assert msg.headers[topo.H_EXCHANGE] == topo.EVENTS_EXCHANGE
    assert msg.headers[topo.H_ROUTING_KEY] == "case.reported"
    assert msg.body == ev.to_json()
    assert len(trace.of(ev.event_id)) == 2 and len(calls) == 2
    assert handled() == []
    assert_settled(trace, amqp_uri, container)
    assert len(calls) == 2  # and never again


def test_transient_errors_are_retried_past_max_attempts_until_the_outage_ends(
    probe: Callable[..., Any], amqp_uri: str, trace: Trace, handled: Callable[[], list[str]]
) -> None:
    probe(GRIDFLOW_MAX_ATTEMPTS=2)
    ev, control = reported(1), reported(2)
    outage = sa_exc.OperationalError(
        "INSERT INTO handled", {}, ConnectionRefusedError("database is down")
    )
    fail_always[ev.event_id] = outage
    fail_always[control.event_id] = RuntimeError("a bug")  # same number of failures, not transient
    send(amqp_uri, raw(ev), raw(control))

    # two failures each: the bug is dead-lettered, the outage is not
    assert control.event_id in collect(amqp_uri, DLQ, 1)
    wait_for(
        partial(queue_depth, amqp_uri, "gridflow.retry.5s"), what="the second retry of the event"
    )
    assert len(trace.of(ev.event_id)) == 2
    assert handled() == []

    del fail_always[ev.event_id]  # the database is back
    wait_for(lambda: handled(), timeout=10, what="the event handled after the outage")
    assert handled() == [ev.event_id]
    deliveries = trace.of(ev.event_id)
    assert [d.headers.get(topo.H_ATTEMPTS) for d in deliveries] == [None, 1, 2]
    assert deliveries[-1].headers[topo.H_REASON].startswith("OperationalError: ")
    assert "database is down" in deliveries[-1].headers[topo.H_REASON]
    wait_for(lambda: trace.acks.count(ev.event_id) == 3, what="the last ack")
    assert_settled(trace, amqp_uri)


def test_a_service_with_several_handlers_stopped_while_starting_stops_cleanly(
    container_factory: Any, service_config: dict[str, Any]
) -> None:
    """Regression: stopped before its consumers were ready (a SIGTERM during start-up),
    escalation with its nine handlers hung on "Trying to re-send() an already-triggered
    event" and had to be killed."""
    from eventlet.event import Event as GreenEvent

    from services.escalation.service import EscalationService

    config = {**service_config, "WEB_SERVER_ADDRESS": "127.0.0.1:0"}
    container = container_factory(EscalationService, config)
    container.start()
    qc = next(e for e in container.extensions if type(e).__name__ == "EventQueueConsumer")
    qc._consumers_ready = GreenEvent()  # as it is before the broker answered
    with eventlet.Timeout(20):
        container.stop()
    assert container._died.ready()
