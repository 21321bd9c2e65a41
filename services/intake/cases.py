"""The case aggregate: a case, its assignments and its timeline, and the rules that move them.

Pure domain code (the store maps these classes onto tables without them knowing).

Case states: reported → routed → dispatched → acknowledged → in_progress → resolved.
An assignment moves pending → dispatched → acknowledged → resolved; the case's state is
derived from its assignments. Every change appends to the timeline (time, actor, reason)
and may queue a domain event in ``pending_events`` for the shell to publish.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .loop import ClosedLoop, Task
from .model import (
    Assignment,
    AssignmentState,
    CaseState,
    TimelineEntry,
    TransitionError,
    plain,
)
from .tiered import Extension, TieredResponse

__all__ = [
    "Assignment", "AssignmentState", "Case", "CaseState", "Extension", "Task", "TimelineEntry",
    "TransitionError",
]


class Case(TieredResponse, ClosedLoop):
    def __init__(
        self,
        case_id: str,
        *,
        category: str,
        grid_code: str,
        description: str,
        reporter: dict[str, Any],
        reported_at: datetime,
        building_code: str | None = None,
        lat: float | None = None,
        lng: float | None = None,
        media_urls: list[str] | None = None,
        occurred_at: datetime | None = None,
        severity: str = "normal",
    ) -> None:
        self.case_id = case_id
        self.severity = severity
        self.state = CaseState.REPORTED
        self.category = category
        self.grid_code = grid_code
        self.building_code = building_code
        self.lat = lat
        self.lng = lng
        self.description = description
        self.reporter = reporter
        self.media_urls = media_urls or []
        self.occurred_at = occurred_at
        self.reported_at = reported_at
        self.updated_at = reported_at
        self.tier: str | None = None
        self.tier_code: str | None = None
        self.escalations = 0
        self.assignments: list[Assignment] = []
        self.extensions: list[Extension] = []
        self.tasks: list[Task] = []
        self.followers: list[dict[str, Any]] = []  # reporters of attached duplicates
        self.duplicate_of: str | None = None
        self.awaiting_dispatch = ""  # why the tier owner must dispatch by hand, if so
        self.closed_at: datetime | None = None
        self.rate_until: datetime | None = None
        self.ratings: list[dict[str, Any]] = []  # 评议: one per reporter
        self.record(reported_at, "reported", actor=_actor(reporter), reason="report received")

    # -- bookkeeping -----------------------------------------------------------------------
    # Instances loaded from the database skip __init__, hence the lazy attributes below.
    @property
    def pending_events(self) -> list[tuple[str, dict[str, Any]]]:
        """Domain events to publish when this change is saved: (type, data)."""
        if "_pending_events" not in self.__dict__:
            self._pending_events: list[tuple[str, dict[str, Any]]] = []
        return self._pending_events

    @property
    def new_entries(self) -> list[TimelineEntry]:
        """Timeline entries recorded since the case was created or loaded."""
        if "_new_entries" not in self.__dict__:
            self._new_entries: list[TimelineEntry] = []
        return self._new_entries

    def record(
        self,
        at: datetime,
        kind: str,
        *,
        actor: str = "",
        reason: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.new_entries.append(TimelineEntry(self.case_id, at, kind, actor, reason, data))
        self.updated_at = at

    def assignment(self, department: str) -> Assignment | None:
        return next((a for a in self.assignments if a.department == department), None)

    def _derive_state(self) -> None:
        if not self.assignments or self.state in CaseState.FINAL:
            return
        active = [a for a in self.assignments if a.active]
        if not active:
            self.state = CaseState.RETURNED
            return
        ranks = [a._rank() for a in active]
        resolved = AssignmentState.ORDER.index(AssignmentState.RESOLVED)
        if min(ranks) == resolved:
            self.state = CaseState.RESOLVED
        elif max(ranks) == resolved:
            self.state = CaseState.IN_PROGRESS
        elif min(ranks) >= AssignmentState.ORDER.index(AssignmentState.ACKNOWLEDGED):
            self.state = CaseState.ACKNOWLEDGED
        elif min(ranks) >= AssignmentState.ORDER.index(AssignmentState.DISPATCHED):
            self.state = CaseState.DISPATCHED
        else:
            self.state = CaseState.ROUTED

    # -- what the pipeline tells us --------------------------------------------------------
    def routed(self, tier: dict[str, Any], assignments: list[dict[str, Any]], at: datetime) -> None:
        if not self.escalations:  # an escalation that overtook the routing keeps its tier
            self.tier, self.tier_code = tier["tier"], tier["code"]
        for a in assignments:
            if self.assignment(a["department"]) is None:
                self.assignments.append(
                    Assignment(a["department"], a["role"], a["report_in_due"], a["resolve_due"])
                )
        lead = next((a["department"] for a in assignments if a["role"] == "lead"), "")
        self.record(
            at,
            "routed",
            actor="routing",
            reason=f"starts at {tier['tier']} {tier.get('name', '')}; lead {lead}".strip(),
            data={"tier": tier, "assignments": [plain(a) for a in assignments]},
        )
        self._derive_state()

    def dispatched(self, department: str, at: datetime, routing_key: str, message_id: str) -> None:
        a = self.assignment(department)
        if a is None:
            raise TransitionError(f"no assignment for {department}")
        a.dispatched_at = at
        if a.state == AssignmentState.PENDING:
            a.state = AssignmentState.DISPATCHED
        self.record(
            at,
            "dispatched",
            actor="notify",
            reason=f"sent to {department}",
            data={"department": department, "routing_key": routing_key, "message_id": message_id},
        )
        self._derive_state()

    # -- what departments do ---------------------------------------------------------------
    def acknowledge(self, department: str, *, actor: str, note: str, at: datetime) -> None:
        a = self._own_assignment(department)
        if a.state not in (AssignmentState.PENDING, AssignmentState.DISPATCHED):
            raise TransitionError(
                f"{department} already reported in at {a.acknowledged_at:%Y-%m-%d %H:%M:%S}Z"
                if a.acknowledged_at
                else f"assignment of {department} is {a.state}"
            )
        a.state = AssignmentState.ACKNOWLEDGED
        a.acknowledged_at = at
        late = a.report_in_due is not None and at > a.report_in_due
        self.record(
            at,
            "acknowledged",
            actor=actor or department,
            reason=("reported in late" if late else "reported in") + (f": {note}" if note else ""),
            data={"department": department},
        )
        self.pending_events.append(
            (
                "assignment.acknowledged",
                {
                    "department": department,
                    "actor": actor,
                    "note": note,
                    "at": at,
                },
            )
        )
        self._derive_state()

    def resolve(
        self, department: str, *, actor: str, note: str, media_urls: list[str], at: datetime
    ) -> None:
        a = self._own_assignment(department)
        if a.state != AssignmentState.ACKNOWLEDGED:
            raise TransitionError(
                f"assignment of {department} is {a.state}; "
                + (
                    "report in (ack) before resolving"
                    if a.state != AssignmentState.RESOLVED
                    else "it is already resolved"
                )
            )
        a.state = AssignmentState.RESOLVED
        a.resolved_at = at
        a.paused_at, a.pause_reason = None, ""  # resolving ends a pause
        a.note, a.media_urls = note, list(media_urls)
        self.record(
            at,
            "resolved",
            actor=actor or department,
            reason=note or "resolved",
            data={"department": department, "media_urls": list(media_urls)},
        )
        self.pending_events.append(
            (
                "assignment.resolved",
                {
                    "department": department,
                    "actor": actor,
                    "note": note,
                    "media_urls": list(media_urls),
                    "at": at,
                },
            )
        )
        self._derive_state()
        if self.state == CaseState.RESOLVED:
            self.record(at, "case_resolved", actor="intake", reason="every assignment is resolved")
            self.pending_events.append(("case.resolved", {"resolved_at": at}))

    def _require_open(self) -> None:
        if self.state not in CaseState.OPEN:
            raise TransitionError(f"case {self.case_id} is {self.state}")

    def _own_assignment(self, department: str) -> Assignment:
        self._require_open()
        a = self.assignment(department)
        if a is None:
            names = ", ".join(x.department for x in self.assignments) or "none yet"
            raise TransitionError(
                f"{department} has no assignment on this case (assigned: {names})"
            )
        if not a.active:
            raise TransitionError(f"assignment of {department} is returned "
                                  f"({a.return_code}); it is off the case")
        return a


def _actor(reporter: dict[str, Any]) -> str:
    return f"{reporter.get('kind', '')}:{reporter.get('id', '')}".rstrip(":")
