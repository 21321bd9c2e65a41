"""Routing rules: category × cell → starting tier, lead and assisting departments, deadlines.

Pure domain code over the catalogue, the grid and the calendar (all data, not code).
小事不出小区、难事不出片区、大事不出社区: the category says where a case starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.calendar import WorkCalendar
from shared.catalogue import Catalogue, Category
from shared.grid import GridError, GridRegistry


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


def plan_assignments(category: Category, calendar: WorkCalendar, at: datetime) -> list[Assignment]:
    """One assignment per responsible department, the lead first, each with its clocks."""
    report_in_due = calendar.add(at, category.report_in)
    resolve_due = calendar.add(at, category.resolve)
    return [
        Assignment(
            dept,
            "lead" if dept == category.lead else "assist",
            report_in_due,
            resolve_due,
            str(category.report_in),
            str(category.resolve),
        )
        for dept in category.departments
    ]


def route(
    case: dict[str, Any],
    *,
    catalogue: Catalogue,
    grid: GridRegistry,
    calendar: WorkCalendar,
    at: datetime,
) -> dict[str, Any]:
    """The ``case.routed`` payload for a reported case (its ``case`` summary as reported)."""
    category = catalogue.get(case["category"])
    if category is None:
        raise Unroutable(f"unknown category {case['category']!r}")
    try:
        cell, _building = grid.cell_for_code(case["location"]["grid_code"])
    except GridError as exc:
        raise Unroutable(str(exc)) from exc
    tier = grid.normalise_tier(category.tier)
    return {
        "case": case,
        "tier": grid.tier_info(cell, tier),
        "assignments": [a.as_dict() for a in plan_assignments(category, calendar, at)],
        "catalogue_version": catalogue.version,
        "routed_at": at,
    }
