"""Tables the escalation service owns: the cases' tiers and every clock."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import IdType, UTCDateTime
from shared.unit_of_work import messaging_tables


class Base(DeclarativeBase):
    pass


Outbox, Inbox = messaging_tables(Base)


class CaseTier(Base):
    """Which tier owns a case now, and how often it moved up."""

    __tablename__ = "case_tiers"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    grid_code: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(16))
    tier_code: Mapped[str] = mapped_column(String(32))
    escalations: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Clock(Base):
    """One deadline of one assignment: report-in or resolve. ``due_at`` is empty for a
    stop that arrived before the clock itself."""

    __tablename__ = "clocks"
    __table_args__ = (
        UniqueConstraint("case_id", "department", "kind", name="uq_clock"),
        Index("ix_clocks_due", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16), default="")
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
