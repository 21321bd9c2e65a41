"""The parts of the case aggregate that every case module shares: states, the transition
error, timeline entries and assignments. Pure domain code."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.grid import CANONICAL_LEVELS


class CaseState:
    REPORTED = "reported"
    ROUTED = "routed"
    RETURNED = "returned"  # every department returned it: waiting for a new one
    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"  # every assignment resolved: waiting for verification (核查)
    CLOSED = "closed"  # verified on site (结案)
    DUPLICATE = "duplicate"  # linked to an open case; its reporter follows that one
    OPEN = (REPORTED, ROUTED, RETURNED, DISPATCHED, ACKNOWLEDGED, IN_PROGRESS)
    ALL = (*OPEN, RESOLVED, CLOSED, DUPLICATE)
    FINAL = (CLOSED, DUPLICATE)  # not derived from assignments until reopened / un-linked


class AssignmentState:
    PENDING = "pending"
    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    RETURNED = "returned"  # 退单: refused with a reason; no longer counts for the case
    ORDER = (PENDING, DISPATCHED, ACKNOWLEDGED, RESOLVED)


class TransitionError(Exception):
    """The action is not allowed in the current state; ``str()`` says why."""


class TimelineEntry:
    """One line of a case's history. The timeline is append-only: a case records new
    entries in ``Case.new_entries`` and never needs its past ones to decide anything."""

    def __init__(
        self,
        case_id: str,
        at: datetime,
        kind: str,
        actor: str = "",
        reason: str = "",
        data: dict[str, Any] | None = None,
    ) -> None:
        self.case_id = case_id
        self.at = at
        self.kind = kind
        self.actor = actor
        self.reason = reason
        self.data = data or {}


class Assignment:
    def __init__(
        self, department: str, role: str, report_in_due: datetime, resolve_due: datetime
    ) -> None:
        self.department = department
        self.role = role
        self.state = AssignmentState.PENDING
        self.report_in_due = report_in_due
        self.resolve_due = resolve_due
        # Escalation moves the deadlines above on as it climbs; the measures judge the
        # report-in against the first deadline (响应率) and closing by whether any resolve
        # deadline was missed (按期结案率; an approved extension is not a miss).
        self.first_report_in_due = report_in_due
        self.resolve_missed = False
        self.dispatched_at: datetime | None = None
        self.acknowledged_at: datetime | None = None
        self.resolved_at: datetime | None = None
        self.note = ""
        self.media_urls: list[str] = []
        self.paused_at: datetime | None = None
        self.pause_reason = ""
        self.reworks = 0
        self.return_code = ""  # why it was returned, when it was
        self.return_note = ""

    @property
    def active(self) -> bool:
        return self.state != AssignmentState.RETURNED

    def _rank(self) -> int:
        return AssignmentState.ORDER.index(self.state)


def plain(value: Any) -> Any:
    """JSON-friendly copy (datetimes as ISO strings) for the timeline's data column."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def above(tier: str, than: str) -> bool:
    """Whether grid tier ``tier`` is above ``than`` (the street is above the community)."""
    return CANONICAL_LEVELS.index(tier) < CANONICAL_LEVELS.index(than)


def who(by: dict[str, Any]) -> str:
    """An operator as a timeline actor: ``<tier>:<node code>:<name>``."""
    return f"{by['tier']}:{by.get('code', '')}:{by['name']}"


class CaseCore:
    """What the case's rule mixins (``tiered``, ``loop``) rely on ``cases.Case`` to have."""

    case_id: str
    state: str
    category: str
    grid_code: str
    tier: str | None
    tier_code: str | None
    escalations: int
    reporter: dict[str, Any]
    assignments: list[Assignment]

    if TYPE_CHECKING:
        def record(self, at: datetime, kind: str, *, actor: str = "", reason: str = "",
                   data: dict[str, Any] | None = None) -> None: ...
        def assignment(self, department: str) -> Assignment | None: ...
        def _own_assignment(self, department: str) -> Assignment: ...
        def _derive_state(self) -> None: ...
        def _require_open(self) -> None: ...
        def _check_node(self, by: dict[str, Any], node_code: str) -> None: ...
        def _rework(self, department: str, reason: str, actor: str, at: datetime) -> None: ...
        def _reopen_for(self, departments: list[str], cause: str, reason: str, actor: str,
                        at: datetime) -> None: ...
        @property
        def pending_events(self) -> list[tuple[str, dict[str, Any]]]: ...
