"""One database transaction with its outbox and inbox.

A handler opens a unit of work, filters its events through the inbox (``fresh``), makes
its changes, adds the events it emits (``emit``) and commits: the effect, the record of
what was consumed and what is to be published land together or not at all. After the
commit the relay is woken so the new events leave at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import PrimaryKeyConstraint, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, declared_attr, mapped_column

from shared.amqp.topology import EVENTS_EXCHANGE
from shared.db import UTCDateTime
from shared.events import Event
from shared.outbox import OutboxMixin, outbox_row


class InboxMixin:
    """Columns of a service's inbox: which consumer already handled which message."""

    consumer: Mapped[str] = mapped_column(String(100))
    message_id: Mapped[str] = mapped_column(String(64))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (PrimaryKeyConstraint("consumer", "message_id"),)


def messaging_tables(base: type[DeclarativeBase]) -> tuple[type[OutboxMixin], type[InboxMixin]]:
    """A service's ``outbox`` and ``inbox`` tables, declared on its own base."""
    outbox = type("Outbox", (OutboxMixin, base), {"__tablename__": "outbox"})
    inbox = type("Inbox", (InboxMixin, base), {"__tablename__": "inbox"})
    return outbox, inbox


class UnitOfWork:
    def __init__(
        self,
        session: Session,
        *,
        producer: str,
        now: datetime,
        outbox: type[OutboxMixin],
        inbox: type[InboxMixin],
        after_commit: Callable[[], None] = lambda: None,
        audit: Callable[[Session], None] | None = None,
        audited: Callable[[], None] = lambda: None,
    ) -> None:
        """``audit``: adds the request's audit row just before the commit (and ``audited``
        is told once it is in), so that a change and its record commit together."""
        self.session = session
        self.producer = producer
        self.now = now
        self._outbox = outbox
        self._inbox = inbox
        self._after_commit = after_commit
        self._audit = audit
        self._audited = audited
        self.emitted: list[Event] = []

    def __enter__(self) -> UnitOfWork:
        self.session.begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                if self._audit is not None:
                    self._audit(self.session)
                self.session.commit()
                if self._audit is not None:
                    self._audited()
            else:
                self.session.rollback()
        finally:
            self.session.close()
        if exc_type is None and self.emitted:
            self._after_commit()

    def emit(
        self, event: Event, *, exchange: str = EVENTS_EXCHANGE, routing_key: str | None = None
    ) -> Event:
        """Queue ``event`` for publishing when this unit of work commits."""
        self.session.add(
            outbox_row(
                self._outbox, event, exchange=exchange, routing_key=routing_key, now=self.now
            )
        )
        self.emitted.append(event)
        return event

    def fresh(self, events: Iterable[Event], consumer: str) -> list[Event]:
        """The events ``consumer`` has not handled yet, recorded as handled from now on."""
        batch: dict[str, Event] = {}
        for ev in events:
            batch.setdefault(ev.event_id, ev)
        if not batch:
            return []
        seen = set(
            self.session.scalars(
                select(self._inbox.message_id).where(
                    self._inbox.consumer == consumer,
                    self._inbox.message_id.in_(list(batch)),
                )
            )
        )
        new = [ev for mid, ev in batch.items() if mid not in seen]
        self.session.add_all(
            self._inbox(consumer=consumer, message_id=ev.event_id, processed_at=self.now)
            for ev in new
        )
        return new
