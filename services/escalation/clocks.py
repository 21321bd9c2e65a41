"""Clocks, tiers and the supervision ledger: the rules of 分级响应.

Pure domain code. Every assignment has a report-in (报到) clock and a resolve clock. An
acknowledgement stops the report-in clock; a resolution stops both. A running clock that
reaches its due time fires, and what happens follows the case's policy snapshot
(``shared.policy``) at the clock's step:

- the step still has repeats: the same tier is reminded and the clock gets a fresh
  deadline (the step's duration from now);
- otherwise, if there is a step above: the clock moves up to it, with that step's
  deadline, and the case's tier rises to it (several clocks firing together move the case
  once; a clock that is behind the case's tier does not push it further);
- at the top with no repeats left: the clock is exhausted and fires no more.

Every fire puts the missed item on the supervision ledger (督办台账) or adds to its
history; it closes when the department reports in (report-in) or resolves, or when an
extension is approved (resolve).

A pause (缓办) freezes a clock's remaining time, counted in its own unit (natural or
working time); resuming starts it again with that remainder. An approved extension (延期)
moves the resolve deadline. A reopened assignment (返工) restarts its clocks at the first
step. Handlers may see events out of order, so a stop for an unknown clock is remembered
and wins when the clock arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.calendar import Duration, WorkCalendar
from shared.grid import GridNode, GridRegistry
from shared.policy import step_duration

REPORT_IN = "report_in"
RESOLVE = "resolve"
KINDS = (REPORT_IN, RESOLVE)
FOLLOW_UP = "follow_up"  # a closed case's follow-up visit (回访): fires once, no policy
FOLLOW_UP_DEPARTMENT = ""

RUNNING = "running"
STOPPED = "stopped"
PAUSED = "paused"
EXHAUSTED = "exhausted"

REMIND = "remind"
ESCALATE = "escalate"
EXHAUST = "exhaust"

STOPS: dict[str, tuple[str, ...]] = {
    "assignment.acknowledged": (REPORT_IN,),
    "assignment.resolved": (REPORT_IN, RESOLVE),
    "assignment.returned": (REPORT_IN, RESOLVE),
}
REASONS = {REPORT_IN: "report_in_missed", RESOLVE: "resolve_missed"}


@dataclass(frozen=True)
class ClockPlan:
    department: str
    role: str
    kind: str
    due_at: datetime
    step: int
    working: bool


@dataclass(frozen=True)
class Outcome:
    """What a due clock does, and the clock's state after it."""

    action: str  # remind | escalate | exhaust
    step: int
    repeats: int
    due_at: datetime | None
    working: bool


@dataclass(frozen=True)
class Missed:
    department: str
    kind: str
    due_at: datetime
    next_due: datetime | None = None  # the fresh deadline, None when the clock stopped


# -- clocks ---------------------------------------------------------------------------------
def plans_for(
    assignments: Iterable[Mapping[str, Any]], step: int, working: Mapping[str, bool]
) -> list[ClockPlan]:
    """The two clocks of every new assignment, due as the assignment says."""
    plans = []
    for a in assignments:
        for kind, due in ((REPORT_IN, a["report_in_due"]), (RESOLVE, a["resolve_due"])):
            plans.append(ClockPlan(a["department"], a["role"], kind, due, step, working[kind]))
    return plans


def working_units(report_in: str, resolve: str) -> dict[str, bool]:
    return {REPORT_IN: Duration.parse(report_in).working, RESOLVE: Duration.parse(resolve).working}


def state_on_arrival(existing_state: str | None) -> str:
    """The state a new clock takes: running, unless a stop already came for it."""
    return STOPPED if existing_state == STOPPED else RUNNING


def on_due(
    kind: str,
    step: int,
    repeats: int,
    snapshot: Mapping[str, Any],
    calendar: WorkCalendar,
    now: datetime,
) -> Outcome:
    """What a clock that fell due does, by its case's policy snapshot."""
    steps = snapshot["steps"]
    if repeats < steps[step]["repeat"]:
        duration = step_duration(snapshot, step, kind)
        return Outcome(REMIND, step, repeats + 1, calendar.add(now, duration), duration.working)
    if step + 1 < len(steps):
        duration = step_duration(snapshot, step + 1, kind)
        return Outcome(ESCALATE, step + 1, 0, calendar.add(now, duration), duration.working)
    return Outcome(EXHAUST, step, repeats, None, False)


def restart_plan(
    kind: str, snapshot: Mapping[str, Any], calendar: WorkCalendar, now: datetime
) -> tuple[datetime, bool]:
    """A reopened assignment's clock: the first step's deadline from now."""
    duration = step_duration(snapshot, 0, kind)
    return calendar.add(now, duration), duration.working


def remaining(due_at: datetime, working: bool, calendar: WorkCalendar, now: datetime) -> timedelta:
    """Time left on a clock, in its own unit; what a pause keeps."""
    if working:
        return calendar.working_between(now, due_at)
    return max(due_at - now, timedelta(0))


def resumed_due(left: timedelta, working: bool, calendar: WorkCalendar, now: datetime) -> datetime:
    """The deadline of a clock resumed at ``now`` with ``left`` to go, in UTC."""
    if working:
        return calendar.add_working(now, left).astimezone(UTC)
    return now + left


def extended_due(
    due_at: datetime, extend_by: str, calendar: WorkCalendar, now: datetime
) -> datetime:
    """An approved extension counts from the old deadline, or from now if that passed."""
    return calendar.add(max(due_at, now), Duration.parse(extend_by))


def extended_remaining(
    left: timedelta, working: bool, extend_by: str, calendar: WorkCalendar, now: datetime
) -> timedelta:
    """A paused clock's time left after an extension: what it would have left had it been
    resumed now, extended, and paused again (so the units of both never mix)."""
    due = extended_due(resumed_due(left, working, calendar, now), extend_by, calendar, now)
    return remaining(due, working, calendar, now)


# -- the case ---------------------------------------------------------------------------------
def case_step_after(current: int, outcomes: Iterable[Outcome]) -> int:
    """The case's step once these clocks fired: the highest step an escalation reached."""
    return max([current, *(o.step for o in outcomes if o.action == ESCALATE)])


def tier_of(snapshot: Mapping[str, Any], step: int) -> str:
    return str(snapshot["steps"][step]["tier"])


def recipients(
    *,
    grid: GridRegistry,
    cell: GridNode,
    snapshot: Mapping[str, Any],
    step: int,
    departments: Iterable[str],
) -> dict[str, Any]:
    """Who the step at ``step`` tells: departments, the tier's owner, its supervisors."""
    targets = snapshot["steps"][step]["notify"]
    tier = tier_of(snapshot, step)
    tiers = []
    if "tier_owner" in targets:
        tiers.append({**grid.tier_info(cell, tier), "role": "owner"})
    above = grid.next_tier(tier)
    if "supervisors" in targets and above is not None:
        tiers.append({**grid.tier_info(cell, above), "role": "supervisor"})
    return {
        "departments": sorted(set(departments)) if "departments" in targets else [],
        "tiers": tiers,
    }


def missed_list(missed: Sequence[Missed]) -> list[dict[str, Any]]:
    return [
        {"department": m.department, "clock": m.kind, "due_at": m.due_at, "next_due": m.next_due}
        for m in missed
    ]


def reason_for(missed: Sequence[Missed]) -> str:
    kinds = {m.kind for m in missed}
    return REASONS[RESOLVE] if RESOLVE in kinds else REASONS[REPORT_IN]


# -- the ledger -------------------------------------------------------------------------------
CLOSES: dict[str, tuple[str, ...]] = {
    "assignment.acknowledged": (REPORT_IN,),
    "assignment.resolved": (REPORT_IN, RESOLVE),
    "extension.approved": (RESOLVE,),
    "assignment.returned": (REPORT_IN, RESOLVE),
}
CLOSE_REASONS = {
    "assignment.acknowledged": "reported in",
    "assignment.resolved": "resolved",
    "extension.approved": "extension approved",
    "assignment.returned": "returned (退单)",
}


def history_entry(
    action: str, *, at: datetime, from_tier: str, to_tier: str, due_at: datetime,
    next_due: datetime | None,
) -> dict[str, Any]:
    return {
        "at": at.isoformat(),
        "action": action,
        "from_tier": from_tier,
        "to_tier": to_tier,
        "missed_due": due_at.isoformat(),
        "next_due": next_due.isoformat() if next_due else None,
    }


def late_by(due_at: datetime, until: datetime) -> timedelta:
    return max(until - due_at, timedelta(0))
