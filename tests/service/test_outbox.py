"""The outbox relay and the confirming publisher, on the real broker and database.

No nameko container: a unit of work writes rows, an ``OutboxRelay`` publishes them through a
``ConfirmingPublisher``, and the test reads what arrived from a queue bound to everything
on ``gridflow.events``. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import eventlet
import kombu
import pytest
from nameko.testing.utils import find_free_port
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from shared.amqp import topology as topo
from shared.amqp.publisher import ConfirmingPublisher, OutgoingMessage, PublishError
from shared.db import create_tables, is_postgres, make_engine, non_durable
from shared.events import Event
from shared.outbox import OutboxRelay, outbox_row
from shared.unit_of_work import UnitOfWork, messaging_tables
from support import get_messages, message_json, reported_event, wait_for

SINK = "test.sink"  # bound to everything on gridflow.events
NOWHERE = "test.nowhere"  # a direct exchange nobody is bound to (and no alternate exchange)
FULL = "test.full"  # a classic queue that holds one message and nacks the rest
NOW = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


class Base(DeclarativeBase):
    pass


Outbox, Inbox = messaging_tables(Base)


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def engine(database_url: str | None, tmp_path: Path) -> Iterator[Engine]:
    url = database_url or f"sqlite:///{tmp_path / 'relay.db'}"
    eng = make_engine(url, schema="relay" if database_url else None)
    create_tables(eng, Base.metadata)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def broker(amqp_uri: str) -> str:
    """The test vhost with gridflow's topology, a sink on gridflow.events and two traps."""
    with kombu.Connection(amqp_uri) as conn:
        ch = conn.channel()
        topo.declare(ch, [])
        ch.queue_declare(SINK, durable=True, auto_delete=False)
        ch.queue_bind(SINK, topo.EVENTS_EXCHANGE, "#")
        ch.exchange_declare(NOWHERE, "direct", durable=True, auto_delete=False)
        ch.queue_declare(
            FULL,
            durable=True,
            auto_delete=False,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        )
    return amqp_uri


@pytest.fixture
def publisher(broker: str) -> Iterator[ConfirmingPublisher]:
    pub = ConfirmingPublisher(broker)
    yield pub
    pub.close()


@pytest.fixture
def relay_for(
    engine: Engine, sessions: sessionmaker[Session], publisher: ConfirmingPublisher
) -> Callable[..., OutboxRelay]:
    def make(pub: ConfirmingPublisher | None = None, **kw: Any) -> OutboxRelay:
        kw.setdefault("hold_claims", is_postgres(engine))
        return OutboxRelay(sessions, Outbox, pub or publisher, **kw)

    return make


# -- helpers ----------------------------------------------------------------------------------
def reported(n: int) -> Event:
    return reported_event(n, f"暴露垃圾 {n}")


def uow(sessions: sessionmaker[Session], after_commit: Callable[[], None] = lambda: None) -> Any:
    return UnitOfWork(
        sessions(),
        producer="intake",
        now=NOW,
        outbox=Outbox,
        inbox=Inbox,
        after_commit=after_commit,
    )


def emit(sessions: sessionmaker[Session], *events: Event, **where: str) -> list[str]:
    with uow(sessions) as tx:
        for ev in events:
            tx.emit(ev, **where)
    return [ev.event_id for ev in events]


def rows(sessions: sessionmaker[Session]) -> list[Outbox]:
    with sessions() as s:
        return list(s.scalars(select(Outbox).order_by(Outbox.id)))


def sunk(amqp_uri: str) -> list[Any]:
    return get_messages(amqp_uri, SINK, max_count=100_000)


def ids(messages: list[Any]) -> list[str]:
    return [m.properties["message_id"] for m in messages]


# -- the relay --------------------------------------------------------------------------------
def test_committed_rows_are_published_with_their_properties_and_marked_sent(
    sessions: sessionmaker[Session], relay_for: Callable[..., OutboxRelay], broker: str
) -> None:
    woken: list[bool] = []
    events = [reported(i) for i in range(1, 4)]
    with uow(sessions, after_commit=lambda: woken.append(True)) as tx:
        for ev in events:
            tx.emit(ev)
        assert woken == []  # not before the commit
    assert woken == [True]  # the relay is woken once the rows are committed

    relay = relay_for()
    assert relay.backlog() == 3
    assert relay.drain() == 3
    assert relay.backlog() == 0 and relay.published == 3
    assert all(r.sent_at is not None and r.attempts == 0 for r in rows(sessions))

    msgs = sunk(broker)
    assert ids(msgs) == [ev.event_id for ev in events]  # in id order
    for msg, ev in zip(msgs, events, strict=True):
        assert msg.properties["type"] == "case.reported"
        assert msg.properties["delivery_mode"] == 2
        assert msg.properties["content_type"] == "application/json"
        assert msg.delivery_info["exchange"] == topo.EVENTS_EXCHANGE
        assert msg.delivery_info["routing_key"] == "case.reported"
        assert msg.headers["schema_version"] == 1 and msg.headers["producer"] == "intake"
        assert msg.body == ev.to_json()
        assert message_json(msg)["event_id"] == ev.event_id

    assert relay.drain() == 0  # sent rows are not sent again
    assert sunk(broker) == []


def test_on_sqlite_only_the_marking_of_sent_rows_skips_the_wait_for_the_disk(
    engine: Engine, sessions: sessionmaker[Session], publisher: ConfirmingPublisher,
    database_url: str | None,
) -> None:
    """A 2xx or an ack waits for the fsync; the relay's "sent" marks need not (lost in a
    power cut, the rows go out again and consumers drop them)."""
    if database_url:
        pytest.skip("SQLite's per-transaction safety level")
    writes: set[tuple[str, str]] = set()  # (safety level, statement)

    @event.listens_for(engine, "before_cursor_execute")
    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.split()[0]
        if verb in ("INSERT", "UPDATE"):
            level = cursor.connection.execute("PRAGMA synchronous").fetchone()[0]
            writes.add(({1: "NORMAL", 2: "FULL"}[level], verb))

    with uow(sessions) as tx:
        tx.emit(reported(1))
    relay = OutboxRelay(sessions, Outbox, publisher, hold_claims=False,
                        mark_sessions=sessionmaker(non_durable(engine)))
    assert relay.drain() == 1
    event.remove(engine, "before_cursor_execute", seen)
    assert writes == {("FULL", "INSERT"), ("NORMAL", "UPDATE")}
    assert rows(sessions)[0].sent_at is not None


def test_rolled_back_unit_of_work_publishes_nothing(
    sessions: sessionmaker[Session], relay_for: Callable[..., OutboxRelay], broker: str
) -> None:
    woken: list[bool] = []
    with pytest.raises(RuntimeError), uow(sessions, after_commit=lambda: woken.append(True)) as tx:
        tx.emit(reported(1))
        tx.session.flush()  # the row reached the database inside the transaction
        raise RuntimeError("handler failed")
    assert woken == []
    assert rows(sessions) == []
    assert relay_for().drain() == 0
    assert sunk(broker) == []


def test_unreachable_broker_keeps_rows_unsent_then_everything_goes_out_in_order(
    sessions: sessionmaker[Session],
    relay_for: Callable[..., OutboxRelay],
    publisher: ConfirmingPublisher,
    broker: str,
) -> None:
    sent = emit(sessions, *(reported(i) for i in range(1, 6)))
    dead = ConfirmingPublisher(f"amqp://guest:guest@127.0.0.1:{find_free_port()}/")
    relay = relay_for(dead, batch_size=2)

    with pytest.raises(PublishError):
        relay.drain()
    assert relay.backlog() == 5
    assert all(r.sent_at is None for r in rows(sessions))

    relay.publisher = publisher  # the broker is back
    assert relay.drain() == 5  # three batches: 2 + 2 + 1
    assert relay.backlog() == 0
    assert ids(sunk(broker)) == sent


def test_relay_loop_retries_until_the_broker_is_back(
    sessions: sessionmaker[Session],
    relay_for: Callable[..., OutboxRelay],
    publisher: ConfirmingPublisher,
    broker: str,
) -> None:
    sent = emit(sessions, reported(1), reported(2))
    dead = ConfirmingPublisher(f"amqp://guest:guest@127.0.0.1:{find_free_port()}/")
    relay = relay_for(dead, poll_interval_s=0.05)
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        wait_for(lambda: relay.failures >= 1, what="the relay to fail")
        assert relay.backlog() == 2
        relay.publisher = publisher
        wait_for(lambda: relay.backlog() == 0, what="the backlog to drain")
        sent += emit(sessions, reported(3))
        relay.wake()
        wait_for(lambda: relay.backlog() == 0, what="the new row to leave")
    finally:
        relay.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert ids(sunk(broker)) == sent


def test_row_for_a_missing_exchange_is_not_marked_sent(
    sessions: sessionmaker[Session], relay_for: Callable[..., OutboxRelay], broker: str
) -> None:
    good = emit(sessions, reported(1))
    emit(sessions, reported(2), exchange="gridflow.no-such-exchange")
    relay = relay_for()
    assert relay.drain() == 1
    assert relay.drain() == 0  # tried again, never sent
    sent, bad = rows(sessions)
    assert sent.sent_at is not None
    assert bad.sent_at is None and bad.attempts == 2
    assert bad.last_error == "exchange 'gridflow.no-such-exchange' does not exist"
    assert relay.backlog() == 1
    assert ids(sunk(broker)) == good


def test_row_for_a_missing_exchange_does_not_hold_back_or_repeat_the_others(
    sessions: sessionmaker[Session], relay_for: Callable[..., OutboxRelay], broker: str
) -> None:
    first = emit(sessions, reported(1))
    emit(sessions, reported(2), exchange="gridflow.no-such-exchange")
    last = emit(sessions, reported(3))
    relay = relay_for()
    for _ in range(3):  # three passes of the relay loop
        with contextlib.suppress(PublishError):
            relay.drain()
    assert Counter(ids(sunk(broker))) == Counter(first + last)  # each good row exactly once
    bad = rows(sessions)[1]
    assert bad.sent_at is None and bad.attempts >= 1 and "no-such-exchange" in bad.last_error


def test_returned_row_stays_unsent_with_the_reason_and_the_others_go_out(
    sessions: sessionmaker[Session], relay_for: Callable[..., OutboxRelay], broker: str
) -> None:
    first = emit(sessions, reported(1))
    emit(sessions, reported(2), exchange=NOWHERE, routing_key="nobody")
    last = emit(sessions, reported(3))
    relay = relay_for()

    assert relay.drain() == 2
    good1, returned, good2 = rows(sessions)
    assert good1.sent_at is not None and good2.sent_at is not None
    assert returned.sent_at is None and returned.attempts == 1
    assert returned.last_error == f"returned unroutable: {NOWHERE} nobody"
    assert ids(sunk(broker)) == first + last

    assert relay.drain() == 0  # tried again on the next pass, never marked sent
    returned = rows(sessions)[1]
    assert returned.sent_at is None and returned.attempts == 2
    assert relay.backlog() == 1
    assert sunk(broker) == []


def test_nacked_row_stays_unsent(
    sessions: sessionmaker[Session], relay_for: Callable[..., OutboxRelay], broker: str
) -> None:
    accepted = emit(sessions, reported(1), exchange="", routing_key=FULL)
    emit(sessions, reported(2), exchange="", routing_key=FULL)  # the queue is full: nacked
    relay = relay_for()
    assert relay.drain() == 1
    ok, nacked = rows(sessions)
    assert ok.sent_at is not None
    assert nacked.sent_at is None and nacked.attempts == 1
    assert nacked.last_error == "nacked by the broker"
    assert ids(get_messages(broker, FULL)) == accepted


def test_purge_deletes_only_sent_rows_older_than_the_retention(
    sessions: sessionmaker[Session], relay_for: Callable[..., OutboxRelay]
) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=3)
    with sessions() as s, s.begin():
        for n, created, sent in [
            (1, long_ago, long_ago),  # old and sent: purged
            (2, long_ago, now - timedelta(hours=25)),  # sent just past the retention: purged
            (3, long_ago, now - timedelta(hours=23)),  # sent within the retention: kept
            (4, long_ago, None),  # old but never sent: kept, whatever its age
            (5, now, None),  # new, unsent: kept
        ]:
            row = outbox_row(Outbox, reported(n), now=created)
            row.sent_at = sent
            s.add(row)
    relay = relay_for(retention=timedelta(hours=24))
    assert relay.purge() == 2
    assert [r.case_id[-1] for r in rows(sessions)] == ["3", "4", "5"]
    assert relay.purge() == 0


def test_two_relays_on_postgresql_publish_every_row_exactly_once(
    database_url: str | None,
    engine: Engine,
    sessions: sessionmaker[Session],
    relay_for: Callable[..., OutboxRelay],
    broker: str,
) -> None:
    if database_url is None:
        pytest.skip("claims are held with FOR UPDATE SKIP LOCKED on PostgreSQL only")
    total = 1200
    sent: list[str] = []
    for start in range(0, total, 200):
        sent += emit(sessions, *(reported(i) for i in range(start, start + 200)))

    publishers = [ConfirmingPublisher(broker) for _ in range(2)]
    relays = [relay_for(p, hold_claims=True, batch_size=25) for p in publishers]

    def drain(relay: OutboxRelay) -> None:
        deadline = time.monotonic() + 30
        while relay.backlog() and time.monotonic() < deadline:
            if relay.publish_batch() == 0:
                eventlet.sleep(0.01)  # every unsent row is claimed by the other relay

    try:
        threads = [eventlet.spawn(drain, r) for r in relays]
        for t in threads:
            t.wait()
    finally:
        for p in publishers:
            p.close()

    assert relays[0].backlog() == 0
    assert relays[0].published + relays[1].published == total
    assert relays[0].published > 0 and relays[1].published > 0  # both took part
    received = Counter(ids(sunk(broker)))
    assert set(received) == set(sent)
    assert [mid for mid, n in received.items() if n != 1] == []


# -- the publisher on its own -----------------------------------------------------------------
def test_publisher_reports_returned_and_nacked_messages_by_index(broker: str) -> None:
    pub = ConfirmingPublisher(broker)

    def msg(i: int, exchange: str, key: str) -> OutgoingMessage:
        return OutgoingMessage(exchange, key, b"{}", f"m-{i}", "probe")

    try:
        assert pub.publish([]) == {}
        failed = pub.publish(
            [
                msg(0, topo.EVENTS_EXCHANGE, "case.reported"),
                msg(1, NOWHERE, "nobody"),
                msg(2, "", FULL),
                msg(3, "", FULL),
            ]
        )
        assert failed == {1: f"returned unroutable: {NOWHERE} nobody", 3: "nacked by the broker"}
        assert pub.publish([msg(4, topo.EVENTS_EXCHANGE, "x")]) == {}  # the channel still works
        missing = pub.publish(
            [
                msg(5, "gridflow.no-such-exchange", "x"),
                msg(6, topo.EVENTS_EXCHANGE, "x"),
            ]
        )
        assert missing == {0: "exchange 'gridflow.no-such-exchange' does not exist"}
    finally:
        pub.close()
    assert ids(sunk(broker)) == ["m-0", "m-4", "m-6"]
