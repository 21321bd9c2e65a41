"""The dashboard's and the lists' queries are served by their indexes, on SQLite and on
PostgreSQL: a key index gone missing (or a query rewritten past it) fails here, not at a
million cases (``tests/bench/case_queries.py`` measures them there).

Each query function runs against empty tables (a fresh service database: no statistics,
so the plans are the ones a deployment gets) while its statements are recorded; then each
statement is explained with the same parameters. SQLite: ``EXPLAIN QUERY PLAN`` names the
index and never scans a whole big table. PostgreSQL: ``EXPLAIN`` with sequential scans
priced out shows no ``Seq Scan`` of a big table (an index can serve every step).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from services.escalation.engine import Engine as ClockEngine
from services.escalation.store import Base as EscalationBase
from services.intake import queries, views
from services.intake.measures import Filters
from services.intake.store import Base as IntakeBase
from shared.db import create_tables, make_engine
from shared.reference import load_reference

ROOT = Path(__file__).resolve().parents[2]
REF = load_reference(ROOT / "deploy" / "demo")
NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
MONTH = Filters(since=NOW - timedelta(days=30))
STREET, COMMUNITY = "511802001", "511802001001"
BIG = ("cases", "assignments", "supervision", "clocks")


def _statements(engine: Engine, fn: Callable[[Session], Any]) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            seen.append((statement, params))

    event.listen(engine.engine, "before_cursor_execute", record)
    try:
        with Session(engine) as s:
            fn(s)
    finally:
        event.remove(engine.engine, "before_cursor_execute", record)
    assert seen, "the query function ran no query"
    return seen


def _plans(engine: Engine, fn: Callable[[Session], Any]) -> list[str]:
    """One plan (its lines joined) per statement ``fn`` runs."""
    out = []
    statements = _statements(engine, fn)
    with engine.connect() as conn:
        cur = conn.connection.dbapi_connection.cursor()
        pg = engine.dialect.name == "postgresql"
        if pg:
            cur.execute("SET enable_seqscan = off")
        for statement, params in statements:
            if pg:
                cur.execute("EXPLAIN " + statement, params)
                out.append("\n".join(r[0] for r in cur.fetchall()))
            else:
                cur.execute("EXPLAIN QUERY PLAN " + statement, params)
                out.append("\n".join(r[3] for r in cur.fetchall()))
        cur.close()
        conn.rollback()
    return out


def _full_scans(plan: str, dialect: str, walks: set[str]) -> list[str]:
    """Steps that read a whole big table, or walk a whole index of one other than those in
    ``walks`` (an unfiltered list walks the newest-first index and stops at its page)."""
    if dialect == "postgresql":
        return [line for line in plan.splitlines()
                if re.search(rf"Seq Scan on (\w+\.)?({'|'.join(BIG)})\b", line)]
    allowed = {*walks, "ix_assignments_reworked"}  # a partial index of the few reworked
    return [line for line in plan.splitlines()
            if re.match(rf"SCAN ({'|'.join(BIG)})\b", line.strip())
            and not any(f"INDEX {name}" in line for name in allowed)]


@pytest.fixture
def engines(database_url: str | None, tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    intake = make_engine(database_url or f"sqlite:///{tmp_path / 'intake.db'}", schema="intake")
    create_tables(intake, IntakeBase.metadata)
    escalation = make_engine(database_url or f"sqlite:///{tmp_path / 'escalation.db'}",
                             schema="escalation")
    create_tables(escalation, EscalationBase.metadata)
    yield intake, escalation
    intake.dispose()
    escalation.dispose()


def _list(**kw: Any) -> Callable[[Session], Any]:
    base = {"state": None, "grid": None, "department": None, "page": 3, "per_page": 50}
    return lambda s: views.list_cases(s, **{**base, **kw})


GRID, CAT = REF.grid, REF.catalogue
CLOCKS = ClockEngine(REF, "escalation", claim_with_skip_locked=False)

# (name, query, the indexes its plans use on SQLite: every one of them)
INTAKE: list[tuple[str, Callable[[Session], Any], set[str]]] = [
    ("GET /cases", _list(), {"ix_cases_reported_pk"}),
    ("GET /cases?state=", _list(state="closed"), {"ix_cases_state_reported"}),
    ("GET /cases?grid=street", _list(grid=STREET), {"ix_cases_grid_cover"}),
    ("GET /cases?department=", _list(department="sanitation"),
     {"ix_assignments_dept_state_case"}),
    ("funnel, a month", lambda s: queries.funnel(s, GRID, MONTH, CAT), {"ix_cases_period"}),
    ("funnel, a month of a street",
     lambda s: queries.funnel(s, GRID, Filters(since=MONTH.since, grid=STREET), CAT),
     {"ix_cases_period"}),
    ("funnel, a community's whole history",
     lambda s: queries.funnel(s, GRID, Filters(grid=COMMUNITY), CAT), {"ix_cases_grid_cover"}),
    ("measures, a month", lambda s: queries.measures(s, GRID, CAT, MONTH, NOW),
     {"ix_cases_period", "ix_cases_closed_cover", "ix_assignments_report_in_due_cover",
      "ix_assignments_resolved_cover", "ix_cases_rated"}),
    ("measures, a month of a street",
     lambda s: queries.measures(s, GRID, CAT, Filters(since=MONTH.since, grid=STREET), NOW),
     {"ix_cases_period", "ix_cases_closed_cover", "ix_assignments_report_in_due_cover",
      "ix_assignments_resolved_cover", "ix_cases_rated"}),
    ("monitor case list, a month",
     lambda s: queries.case_list(s, MONTH, limit=50, grid=GRID, catalogue=CAT),
     {"ix_cases_reported_pk"}),
    ("monitor case list, open",
     lambda s: queries.case_list(s, Filters(), "open", limit=50, grid=GRID, catalogue=CAT),
     {"ix_cases_state_reported"}),
]
LEDGER: list[tuple[str, Callable[[Session], Any], set[str]]] = [
    ("ledger", lambda s: CLOCKS.ledger(s, now=NOW, per_page=200), {"ix_supervision_opened"}),
    ("ledger, open", lambda s: CLOCKS.ledger(s, now=NOW, state="open", per_page=200),
     {"ix_supervision_state_opened"}),
    ("ledger, a community", lambda s: CLOCKS.ledger(s, now=NOW, grid=COMMUNITY),
     {"ix_supervision_grid"}),
    ("due clocks", lambda s: CLOCKS.claim_due(s, NOW, 500), {"ix_clocks_due"}),
]


WALKS = {"GET /cases", "ledger"}  # no filter: the newest-first index, walked to the page


@pytest.mark.parametrize("name,query,indexes", [*INTAKE, *LEDGER],
                         ids=[n for n, _, _ in [*INTAKE, *LEDGER]])
def test_every_statement_is_served_by_an_index(
    engines: tuple[Engine, Engine], name: str, query: Callable[[Session], Any],
    indexes: set[str],
) -> None:
    intake, escalation = engines
    engine = escalation if (name, query, indexes) in LEDGER else intake
    dialect = engine.dialect.name
    plans = _plans(engine, query)
    walks = indexes if name in WALKS else set()
    for plan in plans:
        assert not _full_scans(plan, dialect, walks), f"{name}: a whole table read:\n{plan}"
    if dialect == "sqlite":
        used = {i for plan in plans for i in re.findall(r"INDEX (\w+)", plan)}
        assert indexes <= used, f"{name}: {sorted(indexes - used)} not used:\n" + "\n--\n".join(
            plans)


def test_an_older_database_gets_the_new_indexes_and_loses_the_superseded(
        engines: tuple[Engine, Engine]) -> None:
    """``create_tables`` on a database made before an index existed adds it (and drops
    the ones it replaces), so an upgraded deployment is not left scanning."""
    from sqlalchemy import inspect

    intake, _ = engines
    schema = "intake" if intake.dialect.name == "postgresql" else None
    prefix = f"{schema}." if schema else ""
    with intake.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {prefix}ix_cases_period")
        conn.exec_driver_sql(f"CREATE INDEX ix_cases_state ON {prefix}cases (state)")
    create_tables(intake, IntakeBase.metadata)
    names = {i["name"] for i in inspect(intake).get_indexes("cases", schema=schema)}
    assert "ix_cases_period" in names
    assert "ix_cases_state" not in names
