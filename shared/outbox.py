"""The transactional outbox and the relay that empties it.

An event born in a database transaction is written to the service's ``outbox`` table in
that same transaction. The relay publishes unsent rows in id order, in batches with
pipelined confirms, and marks them sent once the broker has confirmed them. A crash
between publish and mark means the rows go out again; consumers dedupe on message_id.

On PostgreSQL several instances of a service may relay at once: a batch is claimed with
``FOR UPDATE SKIP LOCKED`` and held until it is marked sent. On SQLite a service has one
process, so the batch is read, published and marked in two short transactions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Index, Integer, String, Text, delete, func, select, update
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column

from shared import metrics
from shared.amqp.publisher import ConfirmingPublisher, OutgoingMessage, PublishError
from shared.amqp.topology import EVENTS_EXCHANGE
from shared.db import IdType, JsonColumn, UTCDateTime
from shared.events import Event

log = logging.getLogger(__name__)

# How long the relay waits at most between two attempts while the broker or the database
# is unreachable, i.e. how late the outbox may start draining after either is back.
DEFAULT_MAX_BACKOFF_S = 5.0


class OutboxMixin:
    """Columns of a service's outbox table; mix into the service's declarative Base."""

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    exchange: Mapped[str] = mapped_column(String(100))
    routing_key: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    case_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JsonColumn, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            Index(
                f"ix_{cls.__tablename__}_unsent",  # type: ignore[attr-defined]
                "id",
                postgresql_where=cls.sent_at.is_(None),
                sqlite_where=cls.sent_at.is_(None),
            ),
        )


def outbox_backlog(session: Session, model: type[OutboxMixin]) -> int:
    """How many rows of the outbox are not sent yet (by the partial index of unsent rows)."""
    return session.scalar(select(func.count()).where(model.sent_at.is_(None))) or 0


def outbox_row(
    model: type[OutboxMixin],
    event: Event,
    *,
    exchange: str = EVENTS_EXCHANGE,
    routing_key: str | None = None,
    now: datetime,
) -> OutboxMixin:
    return model(
        message_id=event.event_id,
        exchange=exchange,
        routing_key=routing_key or event.type,
        type=event.type,
        case_id=event.case_id,
        body=event.to_json().decode(),
        headers={"schema_version": event.schema_version, "producer": event.producer},
        created_at=now,
        attempts=0,
    )


class OutboxRelay:
    """Publishes a service's outbox. ``run`` loops until ``stop``; ``drain`` empties once."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        model: type[OutboxMixin],
        publisher: ConfirmingPublisher,
        *,
        hold_claims: bool,
        mark_sessions: Callable[[], Session] | None = None,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        retention: timedelta = timedelta(hours=24),
        service: str | None = None,
    ) -> None:
        """``service`` labels the relay's metrics; by default the service its publisher
        speaks for (``gridflow.<service>``, the container's BrokerPublisher).
        ``mark_sessions``: where rows read apart from their marking (SQLite) are marked
        sent, by default ``sessions``; the service's Store gives sessions that need not wait
        for the disk (``shared.db.DURABLE``): a mark lost in a power cut sends rows again."""
        self.sessions = sessions
        self.mark_sessions = mark_sessions or sessions
        self.model = model
        self.publisher = publisher
        self.hold_claims = hold_claims
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max(max_backoff_s, poll_interval_s)
        self.retention = retention
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.published = 0
        self.failures = 0
        if service is None:
            app_id = str(getattr(publisher, "app_id", "") or "")
            service = app_id.removeprefix("gridflow.") if "." in app_id else "unknown"
        self.service = service

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def backlog(self) -> int:
        with self.sessions() as s:
            return outbox_backlog(s, self.model)

    # -- one batch -------------------------------------------------------------------------
    def publish_batch(self) -> int:
        """Publish up to one batch. Returns how many rows were confirmed."""
        m = self.model
        query = select(m).where(m.sent_at.is_(None)).order_by(m.id).limit(self.batch_size)
        with self.sessions() as session, session.begin():
            if self.hold_claims:
                rows = session.scalars(query.with_for_update(skip_locked=True)).all()
                return self._publish_rows(session, rows)
            rows = session.scalars(query).all()
            session.expunge_all()
        if not rows:
            return 0
        with self.mark_sessions() as session, session.begin():
            return self._publish_rows(session, rows)

    def _publish_rows(self, session: Session, rows: list[Any]) -> int:
        if not rows:
            return 0
        messages = [
            OutgoingMessage(
                exchange=r.exchange,
                routing_key=r.routing_key,
                body=r.body.encode(),
                message_id=r.message_id,
                type=r.type,
                headers=dict(r.headers or {}),
            )
            for r in rows
        ]
        failed = self.publisher.publish(messages)  # raises PublishError: nothing is marked
        now = datetime.now(UTC)
        sent_ids = [r.id for i, r in enumerate(rows) if i not in failed]
        if sent_ids:
            session.execute(
                update(self.model).where(self.model.id.in_(sent_ids)).values(sent_at=now)
            )
        for i, reason in failed.items():
            session.execute(
                update(self.model)
                .where(self.model.id == rows[i].id)
                .values(attempts=self.model.attempts + 1, last_error=reason)
            )
            log.warning(
                "outbox row not confirmed",
                extra={"message_id": rows[i].message_id, "reason": reason},
            )
        self.published += len(sent_ids)
        metrics.outbox_published(self.service, len(sent_ids))
        return len(sent_ids)

    def drain(self) -> int:
        """Publish until the outbox is empty or a batch makes no progress."""
        total = 0
        while True:
            n = self.publish_batch()
            total += n
            if n < self.batch_size:
                return total

    def purge(self) -> int:
        cutoff = datetime.now(UTC) - self.retention
        with self.sessions() as session, session.begin():
            result = session.execute(
                delete(self.model).where(
                    self.model.sent_at.is_not(None), self.model.sent_at < cutoff
                )
            )
            return result.rowcount or 0

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Drain, then wait for a wake-up or the poll interval; on failure (broker or
        database unreachable) wait a backoff that doubles from the poll interval up to
        ``max_backoff_s``. The cap is what bounds how long events wait after the broker or
        the database is back, however long the outage was."""
        backoff = self.poll_interval_s
        last_purge = datetime.now(UTC)
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.drain()
                backoff = self.poll_interval_s
                if datetime.now(UTC) - last_purge > timedelta(minutes=10):
                    self.purge()
                    last_purge = datetime.now(UTC)
            except PublishError as exc:
                self.failures += 1
                log.warning(
                    "outbox relay cannot publish, will retry",
                    extra={"error": str(exc), "retry_in_s": backoff},
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            except Exception:
                self.failures += 1
                log.exception("outbox relay failed, will retry", extra={"retry_in_s": backoff})
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self._wake.wait(self.poll_interval_s)
