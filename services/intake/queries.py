"""The queries behind the operators' monitor: the case funnel with its grid drill-down, the
district's measures and the case lists, over intake's tables (cases, assignments).

The SQL adapter of ``measures``: the database counts (GROUP BY, COUNT, SUM over indexed
filters) and hands back a few hundred rows at most, whatever the number of cases; the
definitions and the arithmetic are in ``measures``. Every answer is JSON-friendly (ISO
times, rounded floats), for nameko RPC and for HTTP alike.

A grid subtree is a range of codes (codes nest: a child's code starts with its parent's, and
codes are digits, so the subtree of ``511802001`` is ``511802001 <= code < 511802002``): a
range any B-tree index on the code serves, on SQLite and on PostgreSQL whatever the
collation's LIKE support.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Select,
    and_,
    case,
    column,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from shared.catalogue import Catalogue
from shared.db import code_range
from shared.grid import CELL_CODE_LENGTH, GridNode, GridRegistry

from . import measures as m
from .loop import UNSATISFIED_SCORE
from .model import AssignmentState, CaseState
from .store import assignments as A
from .store import cases as C


# -- filters as SQL --------------------------------------------------------------------------
class _Unindexed(FunctionElement[Any]):
    """``unindexed(col)``: see ``_unindexed``."""

    name = "unindexed"
    inherit_cache = True


@compiles(_Unindexed)
def _unindexed_anywhere(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # the column itself: PostgreSQL's planner
    # has statistics of ranges and picks the period or the subtree by their sizes


@compiles(_Unindexed, "sqlite")
def _unindexed_sqlite(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)} || '')"


def _unindexed(col: Any) -> ColumnElement[Any]:
    """``col`` as an expression no index orders or filters by on SQLite (``col || ''``),
    for a term that must not pick the plan: SQLite keeps no statistics of ranges, and would
    walk a whole index in this column's order (to skip a sort, or for an equality it guesses
    to be rare) instead of the period's range on a covering index. Elsewhere the column."""
    fn = _Unindexed(col)
    fn.type = col.type
    return fn


def within(code: str | None, *, indexed: bool = True) -> list[ColumnElement[bool]]:
    """The cases in the subtree of grid node ``code`` (None: every case). A case's
    ``grid_code`` is its cell (15 digits); a node above the cells is a prefix of it, a
    building (below the cells) is the case's ``building_code``. ``indexed=False``: a
    filter on the rows another index finds (a period's), not a range to search."""
    if not code:
        return []
    grid_code, building_code = C.c.grid_code, C.c.building_code
    if not indexed:
        grid_code, building_code = _unindexed(grid_code), _unindexed(building_code)
    if len(code) < CELL_CODE_LENGTH:
        return code_range(grid_code, code)
    if len(code) == CELL_CODE_LENGTH:
        return [grid_code == code]
    return code_range(building_code, code)


def period(col: Any, f: m.Filters) -> list[ColumnElement[bool]]:
    """``col`` in ``[since, until)``."""
    return [*([col >= f.since] if f.since else []), *([col < f.until] if f.until else [])]


def has_department(department: str | None, *, probe: bool = False) -> list[ColumnElement[bool]]:
    """Cases with an assignment of ``department`` (returned ones included): the department's
    case keys, read from ``ix_assignments_dept_state_case`` once; or, with ``probe`` (the
    cases are a period's, found by its index), each case's assignment looked up by its key
    (``uq_assignment``) instead of the department's whole history."""
    if not department:
        return []
    if probe:
        return [exists().where(A.c.case_pk == C.c.pk, A.c.department == department)]
    return [C.c.pk.in_(select(A.c.case_pk).where(A.c.department == department))]


def _on_cases(q: Select[Any], case_where: list[ColumnElement[bool]]) -> Select[Any]:
    """A query of assignments, kept to those whose case meets ``case_where`` (no condition
    when there is none: the whole table needs no join). The cases are picked first (by
    their own indexes) and their assignments looked up by case: a join would let the
    planner walk every assignment in department order and look up its case."""
    if not case_where:
        return q
    return q.where(A.c.case_pk.in_(select(C.c.pk).where(*case_where)))


def _of_cases(q: Select[Any], case_where: list[ColumnElement[bool]]) -> Select[Any]:
    """``_on_cases`` for a query of assignments that has its own period: the period's index
    finds the assignments, and each one's case (by its primary key) is checked against
    ``case_where`` (which should use no index: ``within(…, indexed=False)``)."""
    if not case_where:
        return q
    return q.select_from(A.join(C, C.c.pk == A.c.case_pk)).where(*case_where)


def _node(grid: GridRegistry, code: str | None) -> GridNode:
    node = grid.root if code is None else grid.get(code)
    if node is None:
        raise m.InvalidFilters({"grid": [f"unknown grid code {code}"]})
    return node


def _within_node(grid: GridRegistry, node: GridNode,
                 filters: m.Filters | None = None) -> list[ColumnElement[bool]]:
    """``within`` the node; the district is every case (no condition to evaluate). With a
    period the period's index finds the rows and the subtree filters them (a street holds
    a third of the district's cases, a month a twelfth of the year's); without one the
    subtree's range of cell codes is searched."""
    if node is grid.root:
        return []
    return within(node.code, indexed=not _has_period(filters))


def _has_period(filters: m.Filters | None) -> bool:
    return filters is not None and (filters.since is not None or filters.until is not None)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _seconds(session: Session, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` in seconds, as a float, on either database."""
    if _dialect(session) == "postgresql":
        return func.extract("epoch", end - start).cast(Float)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


# -- the funnel ------------------------------------------------------------------------------
def _child_key(grid: GridRegistry, node: GridNode) -> tuple[Any, int] | None:
    """The column and code length that name the child of ``node`` a case lies in (None when
    the node has no level below it)."""
    levels = grid.levels
    depth = levels.depth(node.level)
    if depth + 1 >= len(levels.names):
        return None
    child_level = levels.names[depth + 1]
    length = len(node.code) + levels.digits[child_level]
    cell_depth = levels.depth(levels.cell_level)
    col = C.c.grid_code if depth + 1 <= cell_depth else C.c.building_code
    return col, length


def funnel(session: Session, grid: GridRegistry, filters: m.Filters,
           catalogue: Catalogue | None = None) -> dict[str, Any]:
    """The case funnel of the cases reported in the period, in the node ``filters.grid``
    (default: the district) and with an assignment of ``filters.department``:

    - ``by_state``: cases by current state (every state listed), ``total`` and ``open``;
    - ``stages``: how many reached each stage of the loop (``measures.stages``);
    - ``by_tier`` / ``open_by_tier``: cases (all / open ones) by the tier that owns them now
      (``unrouted``: not routed yet, or a duplicate);
    - ``by_department``: department → {assignment state: n} of its assignments on those
      cases (only the filtered department when one is given); ``department_names`` from
      ``catalogue``;
    - ``by_grid``: the node's children (street → community → area → compound → building),
      each with its ``total`` and ``open`` cases and whether it is a ``leaf``, to drill
      down; ``elsewhere``: the node's cases in no child (a cell's cases reported without a
      building);
    - ``node`` and ``path``: the node, and its breadcrumbs from the district down.
    """
    node = _node(grid, filters.grid)
    in_grid = _within_node(grid, node, filters)
    in_dept = has_department(filters.department, probe=_has_period(filters))
    where = [*in_grid, *period(C.c.reported_at, filters), *in_dept]
    key = _child_key(grid, node)
    child = (func.substr(key[0], 1, key[1]) if key else literal(None)).label("child")
    inner = select(child, C.c.state, C.c.tier).where(*where).subquery()
    rows = session.execute(
        select(inner.c.child, inner.c.state, inner.c.tier, func.count())
        .group_by(inner.c.child, inner.c.state, inner.c.tier)
    ).all()

    by_state = dict.fromkeys(CaseState.ALL, 0)
    by_tier = dict.fromkeys((*grid.levels.tiers(), m.UNROUTED), 0)
    open_by_tier = dict(by_tier)
    kids: dict[str | None, dict[str, int]] = {}
    for code, state, tier, n in rows:
        is_open = n if m.is_open(state) else 0
        by_state[state] = by_state.get(state, 0) + n
        by_tier[tier or m.UNROUTED] = by_tier.get(tier or m.UNROUTED, 0) + n
        open_by_tier[tier or m.UNROUTED] = open_by_tier.get(tier or m.UNROUTED, 0) + is_open
        k = kids.setdefault(code, {"total": 0, "open": 0})
        k["total"] += n
        k["open"] += is_open
    by_grid = [{**m.node_view(c), "tier": c.level, "leaf": not c.children,
                **kids.pop(c.code, {"total": 0, "open": 0})} for c in node.children]
    elsewhere = {"total": sum(k["total"] for k in kids.values()),
                 "open": sum(k["open"] for k in kids.values())}

    dept_rows = session.execute(_on_cases(
        select(A.c.department, A.c.state, func.count())
        .where(*([A.c.department == filters.department] if filters.department else [])),
        [*in_grid, *period(C.c.reported_at, filters)],
    ).group_by(A.c.department, A.c.state)).all()
    by_department: dict[str, dict[str, int]] = {}
    for dept, state, n in sorted(dept_rows, key=lambda r: (r[0], r[1])):
        states = by_department.setdefault(dept, dict.fromkeys(m.assignment_states(), 0))
        states[state] = states.get(state, 0) + n
    names = {code: d.name for code, d in catalogue.departments.items()} if catalogue else {}

    return {
        "filters": filters.as_dict(),
        "node": m.node_view(node),
        "path": m.breadcrumbs(node),
        "total": sum(by_state.values()),
        "open": sum(n for s, n in by_state.items() if m.is_open(s)),
        "by_state": by_state,
        "stages": m.stages(by_state),
        "by_tier": by_tier,
        "open_by_tier": open_by_tier,
        "by_department": by_department,
        "department_names": {d: names.get(d, "") for d in by_department},
        "by_grid": by_grid,
        "elsewhere": elsewhere,
    }


# -- the measures ----------------------------------------------------------------------------
def measures(session: Session, grid: GridRegistry, catalogue: Catalogue, filters: m.Filters,
             now: datetime, top: int = m.DEFAULT_TOP) -> dict[str, Any]:
    """Every measure of ``measures`` for the filters, with numerators and denominators."""
    node = _node(grid, filters.grid)
    in_grid = _within_node(grid, node, filters)
    dept = filters.department
    dept_eq = [A.c.department == dept] if dept else []
    in_dept = has_department(dept, probe=_has_period(filters))

    # the cohort: cases reported in the period → 解决率, 返工率, 高发
    reworked = C.c.pk.in_(select(A.c.case_pk).where(A.c.reworks > 0))
    inner = select(
        _unindexed(C.c.category).label("category"), C.c.state,
        case((reworked, 1), else_=0).label("reworked")
    ).where(*in_grid, *period(C.c.reported_at, filters), *in_dept).subquery()
    cohort = m.cohort_of(
        (cat, state, bool(rw), n) for cat, state, rw, n in session.execute(
            select(inner.c.category, inner.c.state, inner.c.reworked, func.count())
            .group_by(inner.c.category, inner.c.state, inner.c.reworked)
        ).all()
    )

    # cases closed in the period → 按期结案率, handling time, tier split
    late = exists().where(
        A.c.case_pk == C.c.pk, A.c.state != AssignmentState.RETURNED,
        or_(A.c.resolved_at.is_(None), A.c.resolve_missed.is_(True), A.c.resolve_due.is_(None),
            A.c.resolved_at > A.c.resolve_due),
    )
    closed_q = select(
        _unindexed(C.c.tier).label("tier"), case((late, 0), else_=1).label("on_time"),
        _seconds(session, C.c.reported_at, C.c.closed_at).label("secs"),
    ).where(_unindexed(C.c.state) == CaseState.CLOSED, C.c.closed_at.is_not(None), *in_grid,
            *period(C.c.closed_at, filters), *in_dept).subquery()
    closed_rows = session.execute(
        select(closed_q.c.tier, func.count(), func.sum(closed_q.c.on_time),
               func.sum(closed_q.c.secs)).group_by(closed_q.c.tier)
    ).all()
    closed = sum(r[1] for r in closed_rows)
    closed_on_time = sum(int(r[2] or 0) for r in closed_rows)
    total_secs = sum(float(r[3] or 0) for r in closed_rows) if closed else None
    offset, count = m.median_offsets(closed)
    median = m.median_of(
        float(s) for s in session.scalars(
            select(closed_q.c.secs).order_by(closed_q.c.secs).offset(offset).limit(count))
    ) if count else None

    # assignments: report-ins due in the period (响应率), by department
    due_rows = _by_department(session, [
        A.c.first_report_in_due.is_not(None), A.c.first_report_in_due <= now,
        A.c.state != AssignmentState.RETURNED, *period(A.c.first_report_in_due, filters),
        *dept_eq,
    ], in_grid, and_(A.c.acknowledged_at.is_not(None),
                     A.c.acknowledged_at <= A.c.first_report_in_due), _has_period(filters))
    resolved_rows = _by_department(session, [
        A.c.resolved_at.is_not(None), _unindexed(A.c.state) == AssignmentState.RESOLVED,
        *period(A.c.resolved_at, filters), *dept_eq,
    ], in_grid, and_(A.c.resolve_missed.is_(False), A.c.resolve_due.is_not(None),
                     A.c.resolved_at <= A.c.resolve_due), _has_period(filters))
    assigned = dict(session.execute(_on_cases(
        select(A.c.department, func.count()).where(*dept_eq),
        [*in_grid, *period(C.c.reported_at, filters)],
    ).group_by(A.c.department)).all())

    satisfied, rated = _ratings(session, filters, in_grid)

    return {
        "filters": filters.as_dict(),
        "now": now.isoformat(),
        "node": m.node_view(node),
        "path": m.breadcrumbs(node),
        "response_rate": m.response_rate(
            sum(on for _, on in due_rows.values()), sum(n for n, _ in due_rows.values())
        ).as_dict(),
        "resolution_rate": m.resolution_rate(cohort.resolved_or_later, cohort.reported).as_dict(),
        "satisfaction_rate": m.satisfaction_rate(satisfied, rated).as_dict(),
        "on_time_closing_rate": m.on_time_closing_rate(closed_on_time, closed).as_dict(),
        "rework_rate": m.rework_rate(cohort.reworked, cohort.rework_base).as_dict(),
        "cases": {"reported": cohort.reported, "duplicates": cohort.duplicates,
                  "resolved_or_closed": cohort.resolved_or_later, "reworked": cohort.reworked,
                  "closed_in_period": closed},
        "handling_time": m.handling_time(closed, total_secs, median),
        "tier_split": m.tier_split({r[0]: r[1] for r in closed_rows}, grid.levels.tiers()),
        "top_categories": m.top_categories(cohort.by_category or {}, catalogue, top),
        "by_department": m.department_rows(catalogue, assignments=assigned, due=due_rows,
                                         resolved=resolved_rows),
    }


def _by_department(session: Session, where: list[ColumnElement[bool]],
                   in_grid: list[ColumnElement[bool]], good: ColumnElement[bool],
                   period_given: bool) -> dict[str, tuple[int, int]]:
    """department → (assignments matching ``where``, those of them that are ``good``)."""
    dept = _unindexed(A.c.department)  # grouped after the period's range, not by walking
    q = select(dept, func.count(), func.sum(case((good, 1), else_=0))).where(*where)
    q = _of_cases(q, in_grid) if period_given else _on_cases(q, in_grid)
    return {d: (int(n), int(g or 0)) for d, n, g in session.execute(q.group_by(dept)).all()}


def _ratings(session: Session, filters: m.Filters,
             in_grid: list[ColumnElement[bool]]) -> tuple[int, int]:
    """(satisfied, given): the ratings given in the period, each rater's counted.

    Ratings live in a JSON list on their case; the database unrolls it. A rating is given
    while its case is closed and no later than the case's ``rate_until``, which never moves
    back, so only cases with ``rate_until >= since`` can hold one given since ``since``;
    and a case is rated after it was reported, so only one reported before ``until``."""
    pg = _dialect(session) == "postgresql"
    if pg:
        r = func.jsonb_array_elements(C.c.ratings).table_valued(
            column("value", JSONB)).alias("r")
        score = r.c.value.op("->>")("score").cast(Integer)
        fixed = r.c.value.op("->>")("fixed")
        not_false = or_(fixed.is_(None), fixed != "false")
        at = r.c.value.op("->>")("at").cast(DateTime(timezone=True))
        bounds = [*([at >= filters.since] if filters.since else []),
                  *([at < filters.until] if filters.until else [])]
    else:
        r = func.json_each(C.c.ratings).table_valued("value").alias("r")
        score = func.json_extract(r.c.value, "$.score")
        fixed = func.json_extract(r.c.value, "$.fixed")  # 1, 0 or NULL
        not_false = or_(fixed.is_(None), fixed != 0)
        at = func.julianday(func.json_extract(r.c.value, "$.at"))
        bounds = [*([at >= func.julianday(filters.since.isoformat())] if filters.since else []),
                  *([at < func.julianday(filters.until.isoformat())] if filters.until else [])]
    satisfied = and_(score > UNSATISFIED_SCORE, not_false)
    rated = C.c.ratings != literal_column("'[]'")  # ix_cases_rated's condition
    row = session.execute(
        select(func.count(), func.sum(case((satisfied, 1), else_=0)))
        .select_from(C.join(r, true()))
        .where(rated, C.c.rate_until.is_not(None),
               *([C.c.rate_until >= filters.since] if filters.since else []),
               *([C.c.reported_at < filters.until] if filters.until else []),
               *in_grid, *has_department(filters.department, probe=_has_period(filters)), *bounds)
    ).one()
    return int(row[1] or 0), int(row[0] or 0)


# -- case lists ------------------------------------------------------------------------------
def case_list(session: Session, filters: m.Filters, state: str | None = None,
              tier: str | None = None, limit: int = 50, offset: int = 0, *,
              grid: GridRegistry | None = None,
              catalogue: Catalogue | None = None) -> dict[str, Any]:
    """The cases reported in the period, in the grid node, with an assignment of the
    department, in ``state`` (or ``"open"``: every open state) and at ``tier`` (or
    ``"unrouted"``), newest first, ``limit`` (at most 200) from ``offset``; with the total.
    Names of grid cells and categories come from ``grid`` and ``catalogue`` when given."""
    limit = max(1, min(int(limit), m.MAX_LIMIT))
    offset = max(0, int(offset))
    root = grid is not None and filters.grid == grid.root.code
    where = [*within(None if root else filters.grid), *period(C.c.reported_at, filters),
             *has_department(filters.department, probe=_has_period(filters))]
    if state == m.OPEN:
        where.append(C.c.state.in_(CaseState.OPEN))
    elif state:
        where.append(C.c.state == state)
    if tier == m.UNROUTED:
        where.append(C.c.tier.is_(None))
    elif tier:
        where.append(C.c.tier == tier)
    total = session.scalar(select(func.count()).select_from(C).where(*where)) or 0
    rows = session.execute(
        select(C.c.case_id, C.c.state, C.c.tier, C.c.tier_code, C.c.category, C.c.severity,
               C.c.grid_code, C.c.building_code, C.c.reported_at, C.c.updated_at,
               C.c.closed_at, C.c.escalations, C.c.duplicate_of)
        .where(*where).order_by(C.c.reported_at.desc(), C.c.pk.desc())
        .limit(limit).offset(offset)
    ).all()
    items = []
    for r in rows:
        cell = grid.get(r.grid_code) if grid else None
        cat = catalogue.get(r.category) if catalogue else None
        items.append({
            "case_id": r.case_id, "state": r.state, "tier": r.tier, "tier_code": r.tier_code,
            "category": r.category, "category_name": cat.name if cat else "",
            "severity": r.severity, "grid_code": r.grid_code,
            "grid_name": cell.name if cell else "", "building_code": r.building_code,
            "reported_at": r.reported_at.isoformat(), "updated_at": r.updated_at.isoformat(),
            "closed_at": r.closed_at.isoformat() if r.closed_at else None,
            "escalations": r.escalations, "duplicate_of": r.duplicate_of,
        })
    return {"filters": filters.as_dict(), "state": state, "tier": tier, "items": items,
            "total": total, "limit": limit, "offset": offset}
