"""Tables the routing service owns: its decisions, its outbox and its inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import JsonColumn, UTCDateTime
from shared.unit_of_work import messaging_tables


class Base(DeclarativeBase):
    pass


Outbox, Inbox = messaging_tables(Base)


class Decision(Base):
    """What routing decided for a case, on which catalogue version, with the case's policy
    snapshot and summary (a whistle needs both). ``departments`` grows with summons."""

    __tablename__ = "decisions"

    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(16))
    tier_code: Mapped[str] = mapped_column(String(32))
    departments: Mapped[list[Any]] = mapped_column(JsonColumn)  # every one ever on the case
    active: Mapped[list[Any]] = mapped_column(JsonColumn)  # those on it now (not returned)
    catalogue_version: Mapped[str] = mapped_column(String(32))
    policy: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    summary: Mapped[dict[str, Any]] = mapped_column(JsonColumn)
    routed_at: Mapped[datetime] = mapped_column(UTCDateTime())
