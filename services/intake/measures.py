"""The measures a district is judged by (响应率 / 解决率 / 满意率 / 按期结案率 / 返工率), the
operators' case funnel, and the filters both are asked with.

Pure domain code: the definitions, and the arithmetic that turns counts into rates. The
counting itself is done by the database (``queries``), which hands the counts here; every
rate is ``numerator / denominator`` and ``None`` when the denominator is 0 (no basis for a
rate is not a rate of 0).

Periods are half-open, ``[since, until)``, aware datetimes; either end may be open. What a
period selects depends on the measure, and each docstring below says which time it looks at:

- the first report-in deadline (``first_report_in_due``) for 响应率;
- the case's ``reported_at`` (the *cohort* of cases reported in the period) for 解决率,
  返工率, the 高发 categories and the funnel;
- the case's ``closed_at`` for 按期结案率, handling time and the tier split;
- the rating's own time for 满意率;
- the assignment's ``resolved_at`` for the departments' "resolved" columns.

The grid filter is a node of the grid (a street, a community, … a cell or a building): a
case is in it when its cell lies in the node's subtree (codes nest: a child's code starts
with its parent's). The department filter keeps the cases that have an assignment of the
department (returned ones included, as ``GET /api/v1/cases?department=`` does), and, for
the measures of assignments, that department's assignments only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from shared.catalogue import Catalogue
from shared.events import TIERS, Instant
from shared.grid import LEVEL_NAMES_ZH, GridNode, GridRegistry
from shared.responses import Body

from .loop import UNSATISFIED_SCORE
from .model import AssignmentState, CaseState

RATE_DIGITS = 4  # 0.6667
HOURS_DIGITS = 2  # 24.25 h (to 36 seconds)
MAX_LIMIT = 200  # cases per page of a case list
DEFAULT_TOP = 10  # 高发 categories shown
MAX_TOP = 50
OPEN = "open"  # a case-list state that means every open state (CaseState.OPEN)
UNROUTED = "unrouted"  # the tier of a case that has none (not routed yet, a duplicate)

# 解决: resolved by every department, or verified on site and closed (核查结案). There is no
# "verified" state (passing verification closes the case) and no "cancelled" one.
RESOLVED_OR_LATER: tuple[str, ...] = (CaseState.RESOLVED, CaseState.CLOSED)
# The funnel's stages, each reached by the cases in it or in a later one (by current state).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reported", (*CaseState.OPEN, CaseState.RESOLVED, CaseState.CLOSED)),
    ("routed", (CaseState.ROUTED, CaseState.RETURNED, CaseState.DISPATCHED,
                CaseState.ACKNOWLEDGED, CaseState.IN_PROGRESS, CaseState.RESOLVED,
                CaseState.CLOSED)),
    ("dispatched", (CaseState.DISPATCHED, CaseState.ACKNOWLEDGED, CaseState.IN_PROGRESS,
                    CaseState.RESOLVED, CaseState.CLOSED)),
    ("acknowledged", (CaseState.ACKNOWLEDGED, CaseState.IN_PROGRESS, CaseState.RESOLVED,
                      CaseState.CLOSED)),
    ("resolved", RESOLVED_OR_LATER),
    ("closed", (CaseState.CLOSED,)),
)
NAMES_ZH = {
    "response_rate": "响应率",
    "resolution_rate": "解决率",
    "satisfaction_rate": "满意率",
    "on_time_closing_rate": "按期结案率",
    "rework_rate": "返工率",
}


class InvalidFilters(ValueError):
    """Filters that do not validate; ``errors`` maps each field to its reasons, and
    ``str()`` is that mapping as JSON (what an RPC caller receives)."""

    def __init__(self, errors: Mapping[str, Any]) -> None:
        self.errors = dict(errors)
        super().__init__(json.dumps(self.errors, ensure_ascii=False, sort_keys=True))


# -- filters ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    """What the funnel, the measures and the case lists are asked for.

    ``since`` / ``until``: the period, ``[since, until)``, aware datetimes, either may be
    open (None). ``grid``: the code of a grid node whose subtree is looked at (None: the
    whole district). ``department``: a department code (None: every department).
    """

    since: datetime | None = None
    until: datetime | None = None
    grid: str | None = None
    department: str | None = None

    def __post_init__(self) -> None:
        errors: dict[str, list[str]] = {}
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                errors[name] = ["must be an aware datetime (with a UTC offset)"]
        if not errors and self.since and self.until and self.until <= self.since:
            errors["until"] = ["must be after since"]
        if errors:
            raise InvalidFilters(errors)

    def in_period(self, at: datetime | None) -> bool:
        """Whether ``at`` lies in ``[since, until)`` (None never does)."""
        if at is None:
            return False
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)

    def as_dict(self) -> dict[str, Any]:
        return {"since": _iso(self.since), "until": _iso(self.until), "grid": self.grid,
                "department": self.department}


_CODES = r"^[0-9]{1,24}\Z"


class FunnelQuery(Body):
    """The filters, as an RPC's keyword arguments or an HTTP query string. ``None`` is the
    same as leaving a filter out."""

    since = Instant(allow_none=True)
    until = Instant(allow_none=True)
    grid = fields.String(allow_none=True,
                         validate=validate.Regexp(_CODES, error="digits only"))
    department = fields.String(allow_none=True, validate=validate.Length(min=1, max=64))

    @validates_schema
    def _order(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("since") and data.get("until") and data["until"] <= data["since"]:
            raise ValidationError("must be after since", "until")

    @post_load
    def _drop_none(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {k: v for k, v in data.items() if v is not None}


class MeasuresQuery(FunnelQuery):
    top = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_TOP))


class CasesQuery(FunnelQuery):
    state = fields.String(allow_none=True, validate=validate.OneOf((*CaseState.ALL, OPEN)))
    tier = fields.String(allow_none=True, validate=validate.OneOf((*TIERS, UNROUTED)))
    limit = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    offset = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=10_000_000))


def filters_from(query: Mapping[str, Any], grid: GridRegistry,
                 catalogue: Catalogue) -> Filters:
    """``Filters`` from a loaded query; an unknown grid code or department is a
    ``ValidationError`` naming the field."""
    errors: dict[str, list[str]] = {}
    code = query.get("grid")
    if code is not None and grid.get(code) is None:
        errors["grid"] = [f"unknown grid code {code}; GET /api/v1/grids lists them"]
    department = query.get("department")
    if department is not None and department not in catalogue.departments:
        errors["department"] = [f"unknown department {department}; "
                                "GET /api/v1/categories lists them"]
    if errors:
        raise ValidationError(errors)
    return Filters(since=query.get("since"), until=query.get("until"), grid=code,
                   department=department)


# -- rates -----------------------------------------------------------------------------------
def rate(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``, or None when the denominator is 0."""
    if numerator < 0 or denominator < 0:
        raise ValueError(f"counts are not negative: {numerator}/{denominator}")
    if numerator > denominator:
        raise ValueError(f"a rate's numerator is part of its denominator: "
                         f"{numerator}/{denominator}")
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class Ratio:
    """A rate with the counts it is made of."""

    name: str
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return rate(self.numerator, self.denominator)

    def as_dict(self) -> dict[str, Any]:
        v = self.value
        return {"name_zh": NAMES_ZH.get(self.name, ""), "numerator": self.numerator,
                "denominator": self.denominator,
                "value": None if v is None else round(v, RATE_DIGITS)}


def response_rate(on_time: int, due: int) -> Ratio:
    """响应率 (response rate): of the assignments whose report-in (报到) was due, the share
    reported in on time.

    - denominator: assignments whose report-in deadline as routed
      (``first_report_in_due``) lies in the period *and* is not later than now (one still
      running is not judged yet);
    - numerator: those of them with ``acknowledged_at`` set and
      ``acknowledged_at <= first_report_in_due``.

    Left out of both: assignments with no report-in deadline (nothing to be on time for),
    and returned ones (退单: off the case; returns are counted by
    ``GET /api/v1/departments/stats``). Escalation moves ``report_in_due`` on to the next
    step's deadline after a miss; the first deadline stays, so a late report-in stays late.
    """
    return Ratio("response_rate", on_time, due)


def resolution_rate(resolved_or_later: int, reported: int) -> Ratio:
    """解决率 (resolution rate): of the cases reported in the period (``reported_at`` in it),
    the share resolved.

    - denominator: cases reported in the period, duplicates left out (a duplicate is
      another report of a case already counted; there is no cancelled state);
    - numerator: those of them now ``resolved`` (every department resolved its part) or
      ``closed`` (verified on site; passing verification closes, there is no separate
      verified state). A case sent back to work (返工) is not resolved until it is again.
    """
    return Ratio("resolution_rate", resolved_or_later, reported)


def is_satisfied(score: int, fixed: bool | None) -> bool:
    """A rating is satisfied when it is not a complaint: a score above
    ``loop.UNSATISFIED_SCORE`` (3, 4 or 5) and not ``"fixed": false``. A complaint is what
    reopens a case (where its category allows), so the two never disagree."""
    return score > UNSATISFIED_SCORE and fixed is not False


def satisfaction_rate(satisfied: int, ratings: int) -> Ratio:
    """满意率 (satisfaction rate): of the ratings (评议) given in the period, the share that
    are satisfied (``is_satisfied``: score 3–5 and not "not fixed").

    - denominator: ratings whose own time (``at``) lies in the period, every rater counted
      (the case's reporter and the reporters of its duplicates rate once each);
    - numerator: those of them that are satisfied.

    A rating stays counted when it reopened its case.
    """
    return Ratio("satisfaction_rate", satisfied, ratings)


def on_time_closing_rate(on_time: int, closed: int) -> Ratio:
    """按期结案率 (on-time closing rate): of the cases closed in the period, the share
    handled within their deadlines.

    - denominator: cases now ``closed`` whose ``closed_at`` lies in the period;
    - numerator: those of them where *every* assignment still on the case (returned ones
      are off it) was resolved by its own resolve deadline: ``resolved_at <= resolve_due``
      and no resolve deadline of it was ever missed (``resolve_missed``: escalation moves
      ``resolve_due`` on after a miss). An assignment with no ``resolve_due`` left is not on
      time.

    Why the departments' resolve deadlines and not ``closed_at <= the latest resolve_due``:
    ``resolve_due`` is the deadline each department owns (定人定责定时限), moved only by an
    approved extension (延期) or a rework; a case is on time when nobody on it was late, and
    one late assisting department makes it late even when the lead was early. The grid
    worker's verification (核查) that closes the case has no deadline of its own, and a
    check the day after the work was done must not make the departments late.
    """
    return Ratio("on_time_closing_rate", on_time, closed)


def rework_rate(reworked: int, base: int) -> Ratio:
    """返工率 (rework rate): of the cases reported in the period that reached resolution,
    the share sent back to work at least once (返工).

    - numerator: cases reported in the period (duplicates left out) with at least one
      rework: an assignment with ``reworks > 0`` (every rework — a failed verification, an
      unsatisfied rating, an operator's reopen — counts there, and the ``reopened`` timeline
      entry records the same);
    - denominator: those of them now ``resolved`` or ``closed``, *plus* the reworked ones
      that are back at work. A rework follows a resolution, so a reworked case did reach
      it; leaving those out because they are not resolved *now* would hide exactly the
      rework the rate measures (and the rate could exceed 1).
    """
    return Ratio("rework_rate", reworked, base)


def hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, HOURS_DIGITS)


def handling_time(closed: int, total_seconds: float | None,
                  median_seconds: float | None) -> dict[str, Any]:
    """Average handling time (平均处置时长): the mean of ``closed_at - reported_at`` over the
    cases closed in the period, in hours; the median alongside. None when none closed."""
    mean = total_seconds / closed if closed and total_seconds is not None else None
    return {"closed": closed, "average_hours": hours(mean),
            "median_hours": hours(median_seconds) if closed else None}


def median_offsets(count: int) -> tuple[int, int]:
    """(offset, how many) of the middle value(s) of ``count`` sorted values."""
    if count <= 0:
        return 0, 0
    return (count - 1) // 2, 1 if count % 2 else 2


def median_of(middle: Iterable[float]) -> float | None:
    values = list(middle)
    return sum(values) / len(values) if values else None


# -- what the database counted, summed up ---------------------------------------------------
@dataclass
class Cohort:
    """Counts over the cases reported in the period (duplicates apart)."""

    reported: int = 0
    duplicates: int = 0
    resolved_or_later: int = 0
    reworked: int = 0
    rework_base: int = 0
    by_category: dict[str, int] | None = None


def cohort_of(rows: Iterable[tuple[str, str, bool, int]]) -> Cohort:
    """Sum rows of ``(category, state, reworked, count)`` (a GROUP BY of the cohort)."""
    by_category: dict[str, int] = {}
    out = Cohort(by_category=by_category)
    for category, state, reworked, n in rows:
        if state == CaseState.DUPLICATE:
            out.duplicates += n
            continue
        out.reported += n
        by_category[category] = by_category.get(category, 0) + n
        resolved = state in RESOLVED_OR_LATER
        out.resolved_or_later += n if resolved else 0
        out.reworked += n if reworked else 0
        out.rework_base += n if resolved or reworked else 0
    return out


def top_categories(by_category: Mapping[str, int], catalogue: Catalogue,
                   top: int = DEFAULT_TOP) -> list[dict[str, Any]]:
    """高发 (most frequent): the ``top`` categories by cases reported in the period
    (duplicates left out), most first, ties by code; with the catalogue's names."""
    ranked = sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    out = []
    for code, n in ranked:
        cat = catalogue.get(code)
        out.append({"code": code, "name": cat.name if cat else "",
                    "major": cat.major_name if cat else "", "count": n})
    return out


def tier_split(closed_by_tier: Mapping[str | None, int], tiers: Iterable[str]) -> dict[str, int]:
    """The cases closed in the period by the tier they were at when closed (``cases.tier``:
    a closed case's tier does not change), tier → cases, bottom tier first; every tier of
    the grid is listed, and any other tier found after them."""
    order = list(tiers)
    counts = {(t or UNROUTED): n for t, n in closed_by_tier.items()}
    extra = sorted(t for t in counts if t not in order)
    return {t: counts.get(t, 0) for t in (*order, *extra)}


def department_rows(catalogue: Catalogue, *, assignments: Mapping[str, int],
                    due: Mapping[str, tuple[int, int]],
                    resolved: Mapping[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """One row per department, by code:

    - ``assignments``: its assignments on the cases reported in the period (returned ones
      included);
    - ``due`` / ``reported_in_on_time`` / ``response_rate``: 响应率 for this department
      alone (``response_rate``'s definition);
    - ``resolved`` / ``resolved_on_time``: its assignments resolved (``resolved_at``) in the
      period, and those of them resolved by their ``resolve_due`` without a missed one.
    """
    names = catalogue.departments
    rows = []
    for d in sorted({*assignments, *due, *resolved}):
        n_due, on_time = due.get(d, (0, 0))
        n_resolved, resolved_on_time = resolved.get(d, (0, 0))
        r = rate(on_time, n_due)
        rows.append({
            "department": d, "name": names[d].name if d in names else "",
            "assignments": assignments.get(d, 0), "due": n_due,
            "reported_in_on_time": on_time,
            "response_rate": None if r is None else round(r, RATE_DIGITS),
            "resolved": n_resolved, "resolved_on_time": resolved_on_time,
        })
    return rows


# -- the funnel ------------------------------------------------------------------------------
def stages(by_state: Mapping[str, int]) -> list[dict[str, Any]]:
    """The funnel: how many cases reached each stage (are in it or in a later one), by
    their current state; duplicates are not in it (they follow another case)."""
    return [{"stage": name, "cases": sum(by_state.get(s, 0) for s in states)}
            for name, states in STAGES]


def is_open(state: str) -> bool:
    return state in CaseState.OPEN


def node_view(node: GridNode) -> dict[str, Any]:
    return {"code": node.code, "name": node.name, "level": node.level,
            "level_zh": LEVEL_NAMES_ZH.get(node.level, "")}


def breadcrumbs(node: GridNode) -> list[dict[str, Any]]:
    """The node's path from the district down, for the drill-down's breadcrumbs."""
    return [node_view(n) for n in node.path()]


def assignment_states() -> tuple[str, ...]:
    return (*AssignmentState.ORDER, AssignmentState.RETURNED)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
