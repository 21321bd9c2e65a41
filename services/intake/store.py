"""Tables the intake service owns, and the mapping of the case aggregate onto them.

The domain classes in ``cases`` know nothing of SQL; they are mapped imperatively here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import IdType, JsonColumn, UTCDateTime
from shared.unit_of_work import messaging_tables

from .cases import Assignment, Case, Extension, Task, TimelineEntry


class Base(DeclarativeBase):
    pass


Outbox, Inbox = messaging_tables(Base)


class Report(Base):
    """Every accepted report, keyed by the client's report_id (the idempotency key).
    ``seq`` numbers the cases: case id = local date + seq."""

    __tablename__ = "reports"

    seq: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(String(64), unique=True)
    case_id: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


cases = Table(
    "cases",
    Base.metadata,
    Column("pk", IdType, primary_key=True, autoincrement=True),
    Column("case_id", String(64), nullable=False, unique=True),
    Column("state", String(20), nullable=False),
    Column("category", String(32), nullable=False),
    Column("severity", String(16), nullable=False, default="normal"),
    Column("grid_code", String(32), nullable=False),
    Column("building_code", String(32)),
    Column("lat", Float),
    Column("lng", Float),
    Column("description", Text, nullable=False),
    Column("reporter", JsonColumn, nullable=False),
    Column("media_urls", JsonColumn, nullable=False),
    Column("occurred_at", UTCDateTime()),
    Column("reported_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("tier", String(16)),
    Column("tier_code", String(32)),
    Column("escalations", Integer, nullable=False, default=0),
    Column("followers", JsonColumn, nullable=False, default=list),
    Column("duplicate_of", String(64)),
    Column("awaiting_dispatch", Text, nullable=False, default=""),
    Column("closed_at", UTCDateTime()),
    Column("rate_until", UTCDateTime()),
    Column("ratings", JsonColumn, nullable=False, default=list),
    # Every list and count of cases is served by one of these, at a million cases and more
    # (tests/bench/case_queries.py; tests/service/test_query_plans.py holds the plans).
    # Lists are newest first: (…, reported_at) plus the primary key (SQLite's rowid is in
    # every index) give that order without a sort.
    Index("ix_cases_reported_pk", "reported_at", "pk"),
    Index("ix_cases_state_reported", "state", "reported_at", "pk"),  # lists/counts by state
    Index("ix_cases_tier", "tier", "reported_at"),
    Index("ix_cases_duplicates", "category", "reported_at"),
    # covering indexes of the funnel and the measures: the cases reported in a period
    # (state, tier, cell, category read from the index alone), the cases of a grid subtree
    # (a range of cell codes), the cases closed in a period
    Index("ix_cases_period", "reported_at", "state", "tier", "grid_code", "category",
          postgresql_include=["pk"]),
    Index("ix_cases_grid_cover", "grid_code", "reported_at", "state", "tier", "category",
          postgresql_include=["pk"]),
    Index("ix_cases_building", "building_code", postgresql_where=text("building_code IS NOT NULL"),
          sqlite_where=text("building_code IS NOT NULL")),
    Index("ix_cases_closed_cover", "closed_at", "state", "tier", "reported_at", "grid_code",
          postgresql_include=["pk"]),
    # ratings given in a period: only cases whose rating window reaches it can hold one, and
    # only the rated ones (a partial index; queries.RATED is its condition)
    Index("ix_cases_rated", "rate_until", postgresql_where=text("ratings <> '[]'::jsonb"),
          sqlite_where=text("ratings <> '[]'")),
    # replaced by the covering ones above; dropped from older databases at start
    info={"superseded_indexes": ("ix_cases_state", "ix_cases_grid", "ix_cases_reported",
                                 "ix_cases_closed", "ix_cases_rate_until")},
)

assignments = Table(
    "assignments",
    Base.metadata,
    Column("pk", IdType, primary_key=True, autoincrement=True),
    Column("case_pk", ForeignKey("cases.pk", ondelete="CASCADE"), nullable=False),
    Column("department", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("state", String(20), nullable=False),
    Column("report_in_due", UTCDateTime()),
    Column("resolve_due", UTCDateTime()),
    Column("first_report_in_due", UTCDateTime()),  # as routed: 响应率 judges against it
    Column("resolve_missed", Boolean, nullable=False, default=False),
    Column("dispatched_at", UTCDateTime()),
    Column("acknowledged_at", UTCDateTime()),
    Column("resolved_at", UTCDateTime()),
    Column("note", Text, nullable=False, default=""),
    Column("media_urls", JsonColumn, nullable=False, default=list),
    Column("paused_at", UTCDateTime()),
    Column("pause_reason", Text, nullable=False, default=""),
    Column("reworks", Integer, nullable=False, default=0),
    Column("return_code", String(32), nullable=False, default=""),
    Column("return_note", Text, nullable=False, default=""),
    UniqueConstraint("case_pk", "department", name="uq_assignment"),
    Index("ix_assignments_dept_state_case", "department", "state", "case_pk"),
    # the monitor's measures (queries.py): report-ins due and resolutions in a period
    # (covering: counted per department from the index alone), and the few cases ever
    # reworked (a partial index: most assignments never are)
    Index("ix_assignments_report_in_due_cover", "first_report_in_due", "department", "state",
          "acknowledged_at", "case_pk"),
    Index("ix_assignments_resolved_cover", "resolved_at", "department", "state", "resolve_missed",
          "resolve_due", "case_pk"),
    Index("ix_assignments_reworked", "case_pk", postgresql_where=text("reworks > 0"),
          sqlite_where=text("reworks > 0")),
    info={"superseded_indexes": ("ix_assignments_department",
                                 "ix_assignments_first_report_in_due", "ix_assignments_resolved")},
)

timeline = Table(
    "timeline",
    Base.metadata,
    Column("pk", IdType, primary_key=True, autoincrement=True),
    Column("case_id", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(100), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("data", JsonColumn, nullable=False, default=dict),
    Index("ix_timeline_case", "case_id", "pk"),
)

extensions = Table(
    "extensions",
    Base.metadata,
    Column("pk", IdType, primary_key=True, autoincrement=True),
    Column("case_pk", ForeignKey("cases.pk", ondelete="CASCADE"), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("department", String(64), nullable=False),
    Column("extend_by", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("requested_by", String(100), nullable=False),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("decided_at", UTCDateTime()),
    Column("decided_by", JsonColumn),
    Column("decision_note", Text, nullable=False, default=""),
    Index("ix_extensions_case", "case_pk"),
)

tasks = Table(
    "tasks",
    Base.metadata,
    Column("pk", IdType, primary_key=True, autoincrement=True),
    Column("case_pk", ForeignKey("cases.pk", ondelete="CASCADE"), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("assignee_code", String(32), nullable=False),
    Column("assignee", JsonColumn, nullable=False),
    Column("state", String(8), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("due_at", UTCDateTime()),
    Column("done_at", UTCDateTime()),
    Column("result", JsonColumn, nullable=False, default=dict),
    Index("ix_tasks_assignee", "assignee_code", "state"),
    Index("ix_tasks_case", "case_pk"),
)

Base.registry.map_imperatively(Task, tasks, properties={"_pk": tasks.c.pk})
Base.registry.map_imperatively(Extension, extensions, properties={"_pk": extensions.c.pk})
Base.registry.map_imperatively(Assignment, assignments, properties={"_pk": assignments.c.pk})
Base.registry.map_imperatively(TimelineEntry, timeline, properties={"_pk": timeline.c.pk})
Base.registry.map_imperatively(
    Case,
    cases,
    properties={
        "_pk": cases.c.pk,
        "assignments": relationship(
            Assignment, order_by=assignments.c.pk, cascade="all, delete-orphan", lazy="selectin"
        ),
        "extensions": relationship(
            Extension, order_by=extensions.c.pk, cascade="all, delete-orphan", lazy="selectin"
        ),
        "tasks": relationship(
            Task, order_by=tasks.c.pk, cascade="all, delete-orphan", lazy="selectin"
        ),
    },
)

# -- who may do what (shared.access): API keys and the audit log ---------------------------
api_keys = Table(
    "api_keys",
    Base.metadata,
    Column("key_id", String(16), primary_key=True),
    Column("secret_hash", String(64), nullable=False),  # SHA-256 of the secret, hex
    Column("client", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("grid", String(32)),
    Column("department", String(64)),
    Column("rate_per_min", Integer),  # None: the service's default; 0: unlimited
    Column("note", Text, nullable=False, default=""),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("revoked_by", String(120)),
)

audit_log = Table(
    "audit_log",
    Base.metadata,
    Column("pk", IdType, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("key_id", String(16)),  # none for a department answering over AMQP, or the CLI
    Column("actor", String(120), nullable=False),  # client name, broker user or OS user
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),  # the entrypoint, e.g. whistle, ack
    Column("target", String(64), nullable=False, default=""),  # a case id, a key id
    Column("outcome", String(16), nullable=False),  # done | denied
    Column("status", Integer),  # the HTTP status (done: 2xx; denied: 403)
    Column("via", String(8), nullable=False),  # http | amqp | cli
    Column("source", String(200), nullable=False, default=""),  # remote address (and proxy's)
    Column("route", String(200), nullable=False, default=""),
    Column("detail", JsonColumn, nullable=False, default=dict),
    Index("ix_audit_at", "at"),
    Index("ix_audit_key", "key_id", "pk"),
    Index("ix_audit_target", "target", "pk"),
)

_APPEND_ONLY = "the audit log is append-only"


@event.listens_for(audit_log, "after_create")
def _append_only(target: Table, connection: Any, **_: Any) -> None:
    """Refuse UPDATE, DELETE (and on PostgreSQL TRUNCATE) of audit rows in the database
    itself, whoever connects."""
    if connection.dialect.name == "postgresql":
        schema = (connection.get_execution_options().get("schema_translate_map") or {}).get(None)
        t = f'"{schema}".audit_log' if schema else "audit_log"
        fn = f'"{schema}".audit_append_only' if schema else "audit_append_only"
        connection.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$")
        connection.exec_driver_sql(
            f"CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON {t} "
            f"FOR EACH ROW EXECUTE FUNCTION {fn}()")
        connection.exec_driver_sql(
            f"CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")
    else:
        for verb in ("UPDATE", "DELETE"):
            connection.exec_driver_sql(
                f"CREATE TRIGGER audit_no_{verb.lower()} BEFORE {verb} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END")
