"""Tables the escalation service owns: cases' tiers and policies, clocks, the ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import IdType, JsonColumn, UTCDateTime
from shared.unit_of_work import messaging_tables


class Base(DeclarativeBase):
    pass


Outbox, Inbox = messaging_tables(Base)


class CaseRow(Base):
    """A case as escalation sees it: where it is on its policy's path, and the policy."""

    __tablename__ = "cases"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    grid_code: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer, default=0)  # index into policy["steps"]
    tier: Mapped[str] = mapped_column(String(16))
    tier_code: Mapped[str] = mapped_column(String(32))
    escalations: Mapped[int] = mapped_column(Integer, default=0)
    policy: Mapped[dict[str, Any]] = mapped_column(JsonColumn)  # the snapshot at routing
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Clock(Base):
    """One deadline of one assignment. ``due_at`` is empty for a stop that arrived before
    the clock itself; ``remaining_s`` holds what a pause kept. ``version`` fences every
    update: a row changed under a transaction makes it fail instead of firing twice."""

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
    step: Mapped[int] = mapped_column(Integer, default=0)
    repeats: Mapped[int] = mapped_column(Integer, default=0)
    working: Mapped[bool] = mapped_column(Boolean, default=False)
    remaining_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    fired: Mapped[int] = mapped_column(Integer, default=0)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}


class SupervisionItem(Base):
    """One overdue item on the ledger (台账): who, which deadline, how late, its history."""

    __tablename__ = "supervision"
    __table_args__ = (
        Index("ix_supervision_state", "state", "tier"),
        # the ledger is listed newest first, whole or by state: a page without a sort
        Index("ix_supervision_opened", "opened_at", "id"),
        Index("ix_supervision_state_opened", "state", "opened_at", "id"),
        Index("ix_supervision_grid", "grid_code"),
        Index("ix_supervision_department", "department", "state"),
        Index("ix_supervision_case", "case_id", "department", "kind"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(8))  # open | closed
    grid_code: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(16))
    tier_code: Mapped[str] = mapped_column(String(32))
    owner: Mapped[dict[str, Any]] = mapped_column(JsonColumn)  # the tier's owner (定人)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the deadline first missed
    current_due: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    close_reason: Mapped[str] = mapped_column(Text, default="")
    history: Mapped[list[Any]] = mapped_column(JsonColumn, default=list)
