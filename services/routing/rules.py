"""Routing rules: category × cell → starting tier, lead and assisting departments, deadlines.

Pure domain code over the catalogue, the grid, the calendar and the tier policies (all
data, not code). 小事不出小区、难事不出片区、大事不出社区: the category says where a case starts;
its policy (chosen by category and severity) says how it climbs, and is snapshotted into
``case.routed`` so that later edits of the policy file leave the case alone.

A whistle (吹哨) summons departments onto a routed case: each new one gets a ``summoned``
assignment with the whistle's report-in and resolve deadlines from the case's snapshot.
A department asked to assist (协同) or dispatched by hand gets the first step's deadlines.
A returned assignment (退单) goes to the next candidate of the category (lead, assisting
departments, then ``alternates``) that has not been on the case; when none is left, the
case waits for its tier owner to dispatch by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.calendar import Duration, WorkCalendar
from shared.catalogue import Catalogue
from shared.grid import GridError, GridRegistry
from shared.policy import PolicyBook, PolicyError, whistle_terms
from shared.reference import ReferenceData


class Unroutable(ValueError):
    """The case names a category or a cell this deployment does not know."""


@dataclass(frozen=True)
class Assignment:
    department: str
    role: str
    report_in_due: datetime
    resolve_due: datetime
    report_in: str
    resolve: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "department": self.department,
            "role": self.role,
            "report_in_due": self.report_in_due,
            "resolve_due": self.resolve_due,
            "report_in": self.report_in,
            "resolve": self.resolve,
        }


def plan_assignments(
    departments: Iterable[tuple[str, str]],
    report_in: Duration,
    resolve: Duration,
    calendar: WorkCalendar,
    at: datetime,
) -> list[Assignment]:
    """One assignment per (department, role), each with the same two clocks from ``at``."""
    report_in_due = calendar.add(at, report_in)
    resolve_due = calendar.add(at, resolve)
    return [
        Assignment(dept, role, report_in_due, resolve_due, str(report_in), str(resolve))
        for dept, role in departments
    ]


def route(
    case: dict[str, Any],
    *,
    catalogue: Catalogue,
    grid: GridRegistry,
    calendar: WorkCalendar,
    policies: PolicyBook,
    at: datetime,
) -> dict[str, Any]:
    """The ``case.routed`` payload for a reported case (its ``case`` summary as reported)."""
    category = catalogue.get(case["category"])
    if category is None:
        raise Unroutable(f"unknown category {case['category']!r}")
    try:
        cell, _building = grid.cell_for_code(case["location"]["grid_code"])
        snapshot = policies.snapshot(category, case.get("severity", "normal"), grid)
    except (GridError, PolicyError) as exc:
        raise Unroutable(str(exc)) from exc
    first = snapshot["steps"][0]
    roles = [(d, "lead" if d == category.lead else "assist") for d in category.departments]
    plans = plan_assignments(
        roles, Duration.parse(first["report_in"]), Duration.parse(first["resolve"]), calendar, at
    )
    return {
        "case": case,
        "tier": grid.tier_info(cell, snapshot["start"]),
        "assignments": [a.as_dict() for a in plans],
        "policy": snapshot,
        "catalogue_version": catalogue.version,
        "routed_at": at,
    }


def route_with(ref: ReferenceData, case: dict[str, Any], at: datetime) -> dict[str, Any]:
    return route(case, catalogue=ref.catalogue, grid=ref.grid, calendar=ref.calendar,
                 policies=ref.policy, at=at)


def summon(
    whistle: Mapping[str, Any],
    *,
    case: dict[str, Any],
    on_case: Iterable[str],
    snapshot: Mapping[str, Any],
    grid: GridRegistry,
    calendar: WorkCalendar,
    at: datetime,
) -> dict[str, Any]:
    """The ``assignments.added`` payload for a whistle on a routed case.

    Departments already on the case are told but keep their assignment and clocks.
    """
    try:
        cell, _ = grid.cell_for_code(case["location"]["grid_code"])
    except GridError as exc:
        raise Unroutable(str(exc)) from exc
    terms = whistle_terms(snapshot, whistle["level"])
    present = set(on_case)
    wanted = list(dict.fromkeys(whistle["departments"]))
    new = [(d, "summoned") for d in wanted if d not in present]
    plans = plan_assignments(
        new, Duration.parse(terms["report_in"]), Duration.parse(terms["resolve"]), calendar, at
    )
    raise_to = terms.get("raise_to")
    return {
        "reason": "whistle",
        "level": whistle["level"],
        "by": whistle["by"],
        "note": whistle.get("reason", ""),
        "assignments": [a.as_dict() for a in plans],
        "already": [d for d in wanted if d in present],
        "whistler": grid.tier_info(cell, whistle["by"]["tier"]),
        "raise_to": grid.tier_info(cell, grid.normalise_tier(raise_to)) if raise_to else None,
        "case": case,
        "added_at": at,
    }


def _first_step(snapshot: Mapping[str, Any]) -> tuple[Duration, Duration]:
    first = snapshot["steps"][0]
    return Duration.parse(first["report_in"]), Duration.parse(first["resolve"])


def requested(
    request: Mapping[str, Any], *, case: dict[str, Any], snapshot: Mapping[str, Any],
    calendar: WorkCalendar, at: datetime,
) -> dict[str, Any]:
    """The ``assignments.added`` payload for 协同 (``assist``) or a manual dispatch."""
    report_in, resolve = _first_step(snapshot)
    plans = plan_assignments([(request["department"], request["role"])], report_in, resolve,
                             calendar, at)
    return {
        "reason": request["kind"], "requested_by": request["requested_by"],
        "note": request.get("note", ""), "assignments": [a.as_dict() for a in plans],
        "case": case, "added_at": at,
    }


def reroute(
    returned: Mapping[str, Any], *, catalogue: Catalogue, case: dict[str, Any],
    ever_on_case: Iterable[str], snapshot: Mapping[str, Any],
    start_tier: Mapping[str, Any], calendar: WorkCalendar, at: datetime,
) -> tuple[str, dict[str, Any]]:
    """Where a returned assignment goes: ``("assignments.added", payload)`` for the next
    candidate, or ``("case.needs_dispatch", payload)`` for the tier owner."""
    category = catalogue.get(case["category"])
    tried = set(ever_on_case)
    nxt = next((d for d in (category.candidates if category else ()) if d not in tried), None)
    if nxt is None:
        reason = (f"{returned['department']} returned it ({returned['reason_code']}) and no "
                  "other department of the catalogue is left: dispatch by hand")
        return "case.needs_dispatch", {
            "returned": dict(returned), "tier": dict(start_tier), "reason": reason,
            "case": case, "at": at,
        }
    role = "assist" if returned["role"] == "summoned" else returned["role"]
    report_in, resolve = _first_step(snapshot)
    plans = plan_assignments([(nxt, role)], report_in, resolve, calendar, at)
    return "assignments.added", {
        "reason": "reroute", "requested_by": "routing",
        "note": f"{returned['department']} returned it: {returned['reason_code']}"
        + (f" ({returned['note']})" if returned.get("note") else ""),
        "assignments": [a.as_dict() for a in plans], "replaces": returned["department"],
        "case": case, "added_at": at,
    }
