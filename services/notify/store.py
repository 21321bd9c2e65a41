"""Tables the notify service owns: what it knows of each case, every delivery on the
public exchange, the reporters who follow each case, and every feedback message to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import IdType, JsonColumn, UTCDateTime
from shared.unit_of_work import messaging_tables


class Base(DeclarativeBase):
    pass


Outbox, Inbox = messaging_tables(Base)


class CaseSnapshot(Base):
    """The case summary as routed, its tier and its lead department now, to give later
    messages their context and address."""

    __tablename__ = "case_snapshots"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    tier: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    lead: Mapped[str | None] = mapped_column(String(64), nullable=True)
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


class FollowerRow(Base):
    """A reporter who gets a case's feedback (see ``feedback.Follower``): the case's own
    (key ``reporter``) or a duplicate's (``duplicate:<case id>``). Active while ``since``
    is later than ``until``; a detached follower stays, inactive."""

    __tablename__ = "followers"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    reporter: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    report_id: Mapped[str] = mapped_column(String(64), default="")
    duplicate_case_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FeedbackDelivery(Base):
    """One feedback message to one follower on one channel (webhook or sms), written with
    the inbox record of the event that caused it and sent later by the feedback sender.

    ``state`` is pending → sent | failed. A pending row is due at ``next_attempt_at``; a
    sender claims it by pushing ``next_attempt_at`` a lease ahead and stamping ``claim``,
    so a sender that dies mid-send leaves it to be tried again after the lease."""

    __tablename__ = "feedback_deliveries"
    __table_args__ = (
        Index("ix_feedback_deliveries_case", "case_id"),
        Index("ix_feedback_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True)
    case_id: Mapped[str] = mapped_column(String(64))
    follower: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(16))  # webhook | sms
    address: Mapped[str] = mapped_column(Text)  # URL or phone: personal data, never logged
    event_type: Mapped[str] = mapped_column(String(64))
    source_event_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    claim: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
