"""The reliable consumer under faults, on the real broker (through a ``FaultProxy``).

- A handler still running when the broker goes away fails, and its retry can be neither
  published nor requeued: the service must live on, and the message comes back after the
  reconnect and is handled once. (A handler that succeeds then is
  ``tests/service/test_connection_loss.py``.)
- A lost broker is tried again at an interval capped by ``GRIDFLOW_RECONNECT_MAX_S``.
- A poison event (its handler always fails) is retried with backoff, at most
  ``GRIDFLOW_MAX_ATTEMPTS`` times, then dead-lettered; events behind it are not held up.
- The crash-loop guard: a message whose consumer dies on it again and again is parked in the
  dead-letter queue by the quorum queue's delivery limit, not redelivered forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import amqp
import eventlet
import kombu
import pytest
from eventlet.event import Event as GreenEvent
from faultkit import one_backend
from proxy import FaultProxy
from sqlalchemy import Integer, String
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.amqp import topology as topo
from shared.events import Event
from shared.extensions.consumer import EventQueueConsumer, event_handler
from shared.extensions.store import Store
from shared.unit_of_work import messaging_tables
from support import column_reader, get_messages, queue_depth, reported_event, wait_for

QUEUE = topo.service_queue("routing")  # a declared quorum queue bound to case.reported
DLQ = topo.dead_letter_queue(QUEUE)
NOW = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


class FaultProbeBase(DeclarativeBase):
    pass


FaultProbeOutbox, FaultProbeInbox = messaging_tables(FaultProbeBase)


class Handled(FaultProbeBase):
    __tablename__ = "handled"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64))


# What the handler does, per event id; reset before every test.
gates: dict[str, GreenEvent] = {}  # wait for the test before finishing
fail_once: dict[str, BaseException] = {}  # raise this the first time (after the gate)
fail_always: dict[str, BaseException] = {}
calls: list[tuple[float, str]] = []  # (when, event id) of every time the handler saw an event


class FaultProbe:
    name = "faultprobe"

    db = Store(FaultProbeBase.metadata, FaultProbeOutbox, FaultProbeInbox)

    @event_handler("case.reported", queue=QUEUE)
    def on_reported(self, events: list[Event]) -> None:
        for ev in events:
            calls.append((time.monotonic(), ev.event_id))
        for ev in events:
            if ev.event_id in gates:
                gates[ev.event_id].wait()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "faultprobe.on_reported"):
                tx.session.add(Handled(event_id=ev.event_id))
                if ev.event_id in fail_always:
                    raise fail_always[ev.event_id]
                if ev.event_id in fail_once:
                    raise fail_once.pop(ev.event_id)


@pytest.fixture(autouse=True)
def _script() -> Iterator[None]:
    for d in (gates, fail_once, fail_always):
        d.clear()
    calls.clear()
    yield
    fail_always.clear()
    for gate in gates.values():
        if not gate.ready():
            gate.send()


@pytest.fixture
def handled(service_config: dict[str, Any]) -> Iterator[Callable[[], list[str]]]:
    with column_reader(service_config, "faultprobe", Handled.event_id) as read:
        yield read


def reported(n: int) -> Event:
    return reported_event(n)


def send(amqp_uri: str, *events: Event, headers: dict[str, Any] | None = None) -> None:
    with kombu.Connection(amqp_uri) as conn:
        channel = conn.channel()
        topo.declare(channel, [])
        for ev in events:
            channel.basic_publish_confirm(
                amqp.Message(
                    ev.to_json(),
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=ev.event_id,
                    type=ev.type,
                    application_headers=headers or {},
                ),
                exchange=topo.EVENTS_EXCHANGE,
                routing_key=ev.type,
                mandatory=True,
            )


def calls_of(event_id: str) -> list[float]:
    return [t for t, i in calls if i == event_id]


def settled(amqp_uri: str) -> bool:
    return all(
        queue_depth(amqp_uri, q) == 0
        for q in (QUEUE, DLQ, *(f"gridflow.retry.{d}s" for d in topo.RETRY_DELAYS_S))
    )


# -- in flight when the broker goes ---------------------------------------------------------
@one_backend
def test_handler_failing_while_the_broker_is_gone_is_retried_after_the_reconnect(
    broker_proxy: FaultProxy,
    faulty: Any,
    amqp_uri: str,
    handled: Callable[[], list[str]],
) -> None:
    container = faulty(FaultProbe)["faultprobe"]
    ev = reported(1)
    gates[ev.event_id] = GreenEvent()
    fail_once[ev.event_id] = RuntimeError("a bug that goes away")
    send(amqp_uri, ev)
    wait_for(lambda: calls_of(ev.event_id), what="the handler to start")

    broker_proxy.cut()
    eventlet.sleep(0.3)  # the consumer has seen its connection go
    gates[ev.event_id].send()  # the handler fails: its retry cannot be published, nor requeued
    eventlet.sleep(0.5)
    assert not container._died.ready(), "the service died with its broker connection"
    broker_proxy.restore()

    wait_for(lambda: handled() == [ev.event_id], timeout=20, what="the event handled once")
    wait_for(lambda: settled(amqp_uri), timeout=20, what="nothing left in the queues")
    assert len(calls_of(ev.event_id)) >= 2  # redelivered after the reconnect
    assert not container._died.ready()


@one_backend
def test_consumer_tries_a_lost_broker_again_at_a_capped_interval(
    broker_proxy: FaultProxy,
    faulty: Any,
    amqp_uri: str,
    handled: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kombu's reconnect waits grow by 2 s up to 30 s, so after a minute's outage events
    waited up to half a minute more. Capped (here at 1 s), the consumer is back promptly."""
    intervals: list[float] = []
    on_error = EventQueueConsumer.on_connection_error

    def spy(self: Any, exc: Any, interval: float) -> None:
        intervals.append(interval)
        on_error(self, exc, interval)

    monkeypatch.setattr(EventQueueConsumer, "on_connection_error", spy)
    container = faulty(FaultProbe, GRIDFLOW_RECONNECT_MAX_S=1.0)["faultprobe"]
    broker_proxy.cut()
    eventlet.sleep(2.5)
    broker_proxy.restore()
    ev = reported(1)
    send(amqp_uri, ev)
    wait_for(lambda: handled() == [ev.event_id], timeout=10, what="the event handled")
    assert len(intervals) >= 2
    assert max(intervals) <= 1.0, intervals
    assert not container._died.ready()


# -- poison ---------------------------------------------------------------------------------
@one_backend
def test_poison_event_is_retried_with_backoff_then_parked_and_holds_nothing_up(
    broker_proxy: FaultProxy,
    faulty: Any,
    amqp_uri: str,
    handled: Callable[[], list[str]],
) -> None:
    faulty(FaultProbe, GRIDFLOW_MAX_ATTEMPTS=2)
    poison, *good = (reported(n) for n in range(1, 5))
    fail_always[poison.event_id] = RuntimeError("cannot be handled")
    send(amqp_uri, poison)
    wait_for(lambda: calls_of(poison.event_id), what="the first attempt")
    send(amqp_uri, *good)  # behind the poison one, on the same queue

    dead = {}

    def parked() -> bool:
        dead.update({m.properties["message_id"]: m for m in get_messages(amqp_uri, DLQ)})
        return poison.event_id in dead

    wait_for(parked, timeout=10, what="the poison event dead-lettered")
    headers = dead[poison.event_id].headers
    assert headers[topo.H_ATTEMPTS] == 2
    assert headers["x-death"][0]["queue"] == "gridflow.retry.1s"  # it waited in a retry queue
    eventlet.sleep(1.5)  # a hot loop would show now
    attempts = calls_of(poison.event_id)
    assert len(attempts) == 2  # GRIDFLOW_MAX_ATTEMPTS, never more
    assert attempts[1] - attempts[0] >= topo.RETRY_DELAYS_S[0] * 0.9  # not redelivered at once
    # the events behind it were handled while it waited for its retry
    assert set(handled()) == {g.event_id for g in good}
    assert max(t for t, i in calls if i != poison.event_id) < attempts[1]
    assert settled(amqp_uri)


@one_backend
def test_event_failing_on_an_outage_is_never_parked_for_long(
    broker_proxy: FaultProxy,
    faulty: Any,
    amqp_uri: str,
    handled: Callable[[], list[str]],
) -> None:
    """An event that failed on the database four times already (a long outage) fails once
    more. Its retries are not counted, but they climbed the backoff ladder, whose next step
    is 600 s: the event would wait ten minutes after the database came back. It waits at
    most 30 s."""
    faulty(FaultProbe, GRIDFLOW_MAX_ATTEMPTS=3)
    ev = reported(1)
    fail_always[ev.event_id] = sa_exc.OperationalError(
        "INSERT INTO handled", {}, ConnectionRefusedError("database is down")
    )
    send(amqp_uri, ev, headers={topo.H_ATTEMPTS: 4})
    wait_for(lambda: queue_depth(amqp_uri, "gridflow.retry.30s") == 1, timeout=10,
             what="the event waiting in the 30 s retry queue")
    assert queue_depth(amqp_uri, "gridflow.retry.600s") == 0
    assert queue_depth(amqp_uri, DLQ) == 0  # never dead-lettered: the event is fine
    assert handled() == []


# -- the crash-loop guard -------------------------------------------------------------------
def test_message_that_kills_its_consumer_again_and_again_is_parked(amqp_uri: str) -> None:
    """A consumer process that dies on a message returns it to the queue unacked. The
    quorum queue counts those deliveries and dead-letters the message after
    DELIVERY_LIMIT of them instead of feeding it to the next consumer forever."""
    ev = reported(1)
    send(amqp_uri, ev)
    deliveries = 0
    for _ in range(topo.DELIVERY_LIMIT + 5):
        with kombu.Connection(amqp_uri) as conn:  # a consumer process …
            channel = conn.channel()
            channel.basic_qos(0, 1, False)
            got: list[Any] = []
            channel.basic_consume(QUEUE, callback=got.append)
            try:
                conn.drain_events(timeout=2)
            except TimeoutError:
                break  # nothing more to deliver
            deliveries += 1
            assert got[0].properties["message_id"] == ev.event_id
        # … that dies without acking: the connection closes, the message goes back
    assert deliveries == topo.DELIVERY_LIMIT + 1  # the first delivery, then the limit
    wait_for(lambda: queue_depth(amqp_uri, DLQ) == 1, what="the message parked")
    parked = get_messages(amqp_uri, DLQ)[0]
    assert parked.properties["message_id"] == ev.event_id
    assert parked.headers["x-death"][0]["reason"] == "delivery_limit"
    assert queue_depth(amqp_uri, QUEUE) == 0
