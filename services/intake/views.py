"""JSON views of cases for the HTTP API, and the query behind the case list."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session

from .cases import Assignment, Case, Extension, TimelineEntry
from .store import assignments, cases, timeline

MAX_PER_PAGE = 100


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def assignment_view(a: Assignment) -> dict[str, Any]:
    return {
        "department": a.department,
        "role": a.role,
        "state": a.state,
        "deadlines": {"report_in": _iso(a.report_in_due), "resolve": _iso(a.resolve_due)},
        "dispatched_at": _iso(a.dispatched_at),
        "acknowledged_at": _iso(a.acknowledged_at),
        "resolved_at": _iso(a.resolved_at),
        "note": a.note,
        "media_urls": a.media_urls,
        "paused": {"since": _iso(a.paused_at), "reason": a.pause_reason} if a.paused_at else None,
        "reworks": a.reworks or 0,
    }


def extension_view(e: Extension) -> dict[str, Any]:
    return {
        "id": e.id,
        "department": e.department,
        "extend_by": e.extend_by,
        "reason": e.reason,
        "state": e.state,
        "requested_by": e.requested_by,
        "requested_at": _iso(e.requested_at),
        "decided_at": _iso(e.decided_at),
        "decided_by": e.decided_by,
        "note": e.decision_note,
    }


def timeline_view(t: TimelineEntry) -> dict[str, Any]:
    return {"at": _iso(t.at), "kind": t.kind, "actor": t.actor, "reason": t.reason, "data": t.data}


def case_summary_view(c: Case) -> dict[str, Any]:
    return {
        "case_id": c.case_id,
        "state": c.state,
        "tier": c.tier,
        "tier_code": c.tier_code,
        "category": c.category,
        "severity": c.severity,
        "grid_code": c.grid_code,
        "building_code": c.building_code,
        "description": c.description,
        "reported_at": _iso(c.reported_at),
        "updated_at": _iso(c.updated_at),
        "escalations": c.escalations,
        "departments": [a.department for a in c.assignments],
    }


def timeline_of(session: Session, case_id: str) -> list[TimelineEntry]:
    return list(
        session.scalars(
            select(TimelineEntry).where(timeline.c.case_id == case_id).order_by(timeline.c.pk)
        )
    )


def case_view(c: Case, history: list[TimelineEntry]) -> dict[str, Any]:
    return {
        **case_summary_view(c),
        "location": {
            "grid_code": c.grid_code,
            "building_code": c.building_code,
            "lat": c.lat,
            "lng": c.lng,
        },
        "reporter": c.reporter,
        "media_urls": c.media_urls,
        "occurred_at": _iso(c.occurred_at),
        "assignments": [assignment_view(a) for a in c.assignments],
        "extensions": [extension_view(e) for e in c.extensions],
        "timeline": [timeline_view(t) for t in history],
    }


def list_query(*, state: str | None, grid: str | None, department: str | None) -> Select[Any]:
    q = select(Case)
    if state:
        q = q.where(cases.c.state == state)
    if grid:
        q = q.where(cases.c.grid_code.startswith(grid, autoescape=True))
    if department:
        q = q.where(
            exists().where(
                assignments.c.case_pk == cases.c.pk, assignments.c.department == department
            )
        )
    return q


def list_cases(
    session: Session,
    *,
    state: str | None,
    grid: str | None,
    department: str | None,
    page: int,
    per_page: int,
) -> dict[str, Any]:
    q = list_query(state=state, grid=grid, department=department)
    total = session.scalar(select(func.count()).select_from(q.order_by(None).subquery())) or 0
    rows = session.scalars(
        q.order_by(cases.c.reported_at.desc(), cases.c.pk.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return {
        "items": [case_summary_view(c) for c in rows],
        "page": page,
        "per_page": per_page,
        "total": total,
    }


LEDGER_COLUMNS = (
    "id", "case_id", "state", "department", "kind", "tier", "tier_code", "owner",
    "due_at", "current_due", "opened_at", "closed_at", "close_reason", "late_by_minutes",
    "fired", "history",
)


def ledger_csv(items: Iterable[dict[str, Any]]) -> str:
    """The supervision ledger (台账) as CSV, one row per overdue item, for spreadsheets."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(LEDGER_COLUMNS)
    for i in items:
        owner = i.get("owner") or {}
        history = "; ".join(
            f"{h['at']} {h['action']} {h['from_tier']}→{h['to_tier']}" for h in i["history"]
        )
        w.writerow([
            i["id"], i["case_id"], i["state"], i["department"], i["kind"], i["tier"],
            i["tier_code"], " ".join(x for x in (owner.get("role"), owner.get("name")) if x),
            i["due_at"], i["current_due"] or "", i["opened_at"], i["closed_at"] or "",
            i["close_reason"], round(i["late_by_s"] / 60, 1), len(i["history"]), history,
        ])
    return out.getvalue()
