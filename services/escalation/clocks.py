"""Clocks and tiers: which deadlines run, which stop, and what a missed one escalates to.

Pure domain code. Every assignment has a report-in (报到) clock and a resolve clock. An
acknowledgement stops the report-in clock; a resolution stops both. A clock that reaches
its due time while running fires, and the case moves one tier up the grid
(compound → area → community → street → district). Several clocks of one case that fire
together move it one tier, not several.

Handlers may see events out of order (an acknowledgement before the routing that created
the clock), so a stop for an unknown clock is remembered and wins when the clock arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.grid import GridRegistry

REPORT_IN = "report_in"
RESOLVE = "resolve"
RUNNING = "running"
STOPPED = "stopped"
FIRED = "fired"

STOPS: dict[str, tuple[str, ...]] = {
    "assignment.acknowledged": (REPORT_IN,),
    "assignment.resolved": (REPORT_IN, RESOLVE),
}
REASONS = {REPORT_IN: "report_in_missed", RESOLVE: "resolve_missed"}


@dataclass(frozen=True)
class ClockPlan:
    department: str
    role: str
    kind: str
    due_at: datetime


@dataclass(frozen=True)
class Missed:
    department: str
    kind: str
    due_at: datetime


def clocks_for(assignments: Iterable[dict[str, Any]]) -> list[ClockPlan]:
    """The two clocks of every routed assignment."""
    plans = []
    for a in assignments:
        plans.append(ClockPlan(a["department"], a["role"], REPORT_IN, a["report_in_due"]))
        plans.append(ClockPlan(a["department"], a["role"], RESOLVE, a["resolve_due"]))
    return plans


def state_on_arrival(existing_state: str | None) -> str:
    """The state a routed clock takes: running, unless a stop already came for it."""
    return STOPPED if existing_state == STOPPED else RUNNING


def escalation(
    *,
    grid: GridRegistry,
    grid_code: str,
    tier: str,
    missed: list[Missed],
    departments_open: Iterable[str],
    at: datetime,
) -> dict[str, Any]:
    """The ``case.escalated`` payload: one tier up (or staying at the top), and who to tell."""
    cell, _ = grid.cell_for_code(grid_code)
    to_tier = grid.next_tier(tier) or tier
    kinds = {m.kind for m in missed}
    reason = REASONS[RESOLVE] if RESOLVE in kinds else REASONS[REPORT_IN]
    if to_tier == tier:
        reason += "_at_top_tier"
    notify = sorted({m.department for m in missed} | set(departments_open))
    return {
        "reason": reason,
        "missed": [
            {"department": m.department, "clock": m.kind, "due_at": m.due_at} for m in missed
        ],
        "from_tier": grid.tier_info(cell, tier),
        "to_tier": grid.tier_info(cell, to_tier),
        "notify": notify,
        "escalated_at": at,
    }
