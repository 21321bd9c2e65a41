"""JSON views of cases for the HTTP API, and the query behind the case list."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.orm import Session

from .cases import Assignment, Case, CaseState, Extension, Task, TimelineEntry
from .queries import has_department, within
from .store import cases, timeline

MAX_PER_PAGE = 100


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def assignment_view(a: Assignment) -> dict[str, Any]:
    return {
        "department": a.department,
        "role": a.role,
        "state": a.state,
        # report_in and resolve are the deadlines running now (escalation moves them on);
        # first_report_in is the one 响应率 judges by, resolve_missed whether one was missed
        "deadlines": {"report_in": _iso(a.report_in_due), "resolve": _iso(a.resolve_due),
                      "first_report_in": _iso(a.first_report_in_due)},
        "resolve_missed": bool(a.resolve_missed),
        "dispatched_at": _iso(a.dispatched_at),
        "acknowledged_at": _iso(a.acknowledged_at),
        "resolved_at": _iso(a.resolved_at),
        "note": a.note,
        "media_urls": a.media_urls,
        "paused": {"since": _iso(a.paused_at), "reason": a.pause_reason} if a.paused_at else None,
        "reworks": a.reworks or 0,
        "returned": {"reason_code": a.return_code, "note": a.return_note}
        if a.state == "returned" else None,
    }


def task_view(t: Task) -> dict[str, Any]:
    return {
        "id": t.id,
        "case_id": t.case_id,
        "kind": t.kind,
        "state": t.state,
        "assignee": t.assignee,
        "created_at": _iso(t.created_at),
        "due_at": _iso(t.due_at),
        "done_at": _iso(t.done_at),
        "result": t.result,
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
        "departments": [a.department for a in c.assignments if a.active],
        "duplicate_of": c.duplicate_of,
        "awaiting_dispatch": c.awaiting_dispatch or None,
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
        "tasks": [task_view(t) for t in c.tasks],
        "followers": c.followers,
        "closed_at": _iso(c.closed_at),
        "rate_until": _iso(c.rate_until),
        "ratings": c.ratings,
        "timeline": [timeline_view(t) for t in history],
    }


# Open311-style status notes for the public (no personal data leaves through here).
STATUS_NOTES = {
    CaseState.REPORTED: "已登记，正在分派 (registered, being sorted)",
    CaseState.ROUTED: "已分派至责任部门 (assigned to the responsible department)",
    CaseState.RETURNED: "重新分派中 (being re-assigned)",
    CaseState.DISPATCHED: "已派单，等待部门报到 (dispatched, waiting for the department)",
    CaseState.ACKNOWLEDGED: "部门已报到，正在处置 (the department is on it)",
    CaseState.IN_PROGRESS: "部分部门已处置完毕 (partly done)",
    CaseState.RESOLVED: "处置完毕，待网格员核查 (done, to be checked on site)",
    CaseState.CLOSED: "已核查办结 (checked on site and closed)",
    CaseState.DUPLICATE: "与已有案件合并 (merged with an earlier report)",
}


def public_view(c: Case, agency: str, service_name: str) -> dict[str, Any]:
    """What anyone may see of a case (Open311 GeoReport v2 fields): status open or closed
    with notes, never the reporter."""
    lead = c.lead()
    return {
        "service_request_id": c.case_id,
        "status": "closed" if c.state in CaseState.FINAL else "open",
        "status_notes": STATUS_NOTES[c.state]
        + (f"; 见 {c.duplicate_of}" if c.duplicate_of else ""),
        "service_code": c.category,
        "service_name": service_name,
        "description": c.description,
        "agency_responsible": agency,
        "requested_datetime": _iso(c.reported_at),
        "updated_datetime": _iso(c.updated_at),
        "expected_datetime": _iso(lead.resolve_due) if lead and c.state in CaseState.OPEN
        else None,
        "address_id": c.grid_code,
        "lat": c.lat,
        "long": c.lng,
        "media_url": c.media_urls[0] if c.media_urls else None,
    }


def list_where(*, state: str | None, grid: str | None,
               department: str | None) -> list[ColumnElement[bool]]:
    """The filters of ``GET /api/v1/cases``: ``grid`` is a subtree (any code prefix; a
    building's code below the cells), ``department`` any assignment of it. Each is an index
    range (``queries.within``, ``queries.has_department``): no LIKE, no probe of the
    assignments per case."""
    return [*([cases.c.state == state] if state else []), *within(grid),
            *has_department(department)]


def list_query(*, state: str | None, grid: str | None, department: str | None) -> Select[Any]:
    """The keys of the listed cases."""
    return select(cases.c.pk).where(*list_where(state=state, grid=grid, department=department))


def list_cases(
    session: Session,
    *,
    state: str | None,
    grid: str | None,
    department: str | None,
    page: int,
    per_page: int,
    after: tuple[datetime, int] | None = None,
) -> dict[str, Any]:
    """A page of cases, newest first. The page's keys come from an index alone (newest
    first: ``ix_cases_reported_pk``, or ``ix_cases_state_reported`` with a state), then
    only those cases are loaded; the total is a count over the same index.

    ``after``: keyset paging, the previous page's last case (its ``reported_at`` and key):
    the page starts there whatever its depth, where ``page`` walks and skips
    ``(page - 1) * per_page`` index entries first. (Not offered over HTTP yet: the route
    and its answer would carry the cursor.)"""
    where = list_where(state=state, grid=grid, department=department)
    total = session.scalar(select(func.count()).select_from(cases).where(*where)) or 0
    q = select(cases.c.pk, cases.c.reported_at).where(*where)
    if after is not None:
        q = q.where(tuple_(cases.c.reported_at, cases.c.pk) < tuple_(*after))
    found = session.execute(
        q.order_by(cases.c.reported_at.desc(), cases.c.pk.desc())
        .limit(per_page)
        .offset(0 if after is not None else (page - 1) * per_page)
    ).all()
    keys = [k for k, _ in found]
    rows = session.scalars(
        select(Case).where(cases.c.pk.in_(keys))
        .order_by(cases.c.reported_at.desc(), cases.c.pk.desc())
    ).all() if keys else []
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
