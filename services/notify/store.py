"""Tables the notify service owns: what it knows of each case, and every delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import IdType, JsonColumn, UTCDateTime
from shared.unit_of_work import messaging_tables


class Base(DeclarativeBase):
    pass


Outbox, Inbox = messaging_tables(Base)


class CaseSnapshot(Base):
    """The case summary as routed and its tier now, to give later messages their context."""

    __tablename__ = "case_snapshots"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    tier: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Delivery(Base):
    """One message to one recipient (a department code, or ``tier.<tier>.<node code>``).
    Whether the broker confirmed it is on the outbox row with the same message_id."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_case", "case_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    case_id: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(32))  # amqp:gridflow.dispatch
    event_type: Mapped[str] = mapped_column(String(64))
    routing_key: Mapped[str] = mapped_column(String(200))
    source_event_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
