"""Benchmark: the dashboard's and the lists' queries over 1,000,000 cases.

Seeds ``--cases`` cases (default 1,000,000) into a fresh intake database, bulk-inserted
through intake's own tables (``services.intake.store``): a year of reports, newest last,
spread over every cell of the district (or of a generated one, ``--cells``), every
category, every state (old cases mostly closed, recent ones open), tiers, one or two
assignments each (some returned, reworked, late), ratings on closed cases; and a
supervision ledger (escalation's table) with an item for about one case in twelve. Then it
times, ``--reps`` times each, every query the operators' dashboard and the HTTP lists run,
by calling the functions their handlers call:

- intake's ``GET /api/v1/cases`` (``views.list_cases``): page 1, a deep page, by state,
  grid subtree and department, and a scoped key's narrowed list (``access.narrowed_grid``);
- ``GET /health`` (open cases counted);
- the funnel and the measures (``queries.funnel`` / ``queries.measures``, HTTP and RPC)
  over the whole history and over the monitor's default month, for the district, a street
  and a department;
- the monitor's case list (``queries.case_list``), first page and deep;
- escalation's ledger (``Engine.ledger``), as the monitor and ``GET /api/v1/supervision``
  ask it.

It prints p50 and max per query, and marks those over ``--target-ms`` (200).

``--cells N`` generates a district of N cells (streets → communities → areas → compounds,
each compound with 3 buildings) instead of the demo's 20, and also times loading it, a grid
lookup, ``path_codes``, routing's rule lookup for a cell and a subtree-narrowed list.

    .venv/bin/python tests/bench/case_queries.py                              # SQLite, 1M
    .venv/bin/python tests/bench/case_queries.py --pg postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python tests/bench/case_queries.py --cases 100000 --cells 50000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

import yaml  # noqa: E402
from common import pg_database  # noqa: E402
from sqlalchemy import Engine, create_engine, func, insert, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from services.escalation.engine import Engine as ClockEngine  # noqa: E402
from services.escalation.store import Base as EscalationBase  # noqa: E402
from services.escalation.store import SupervisionItem  # noqa: E402
from services.intake import queries, views  # noqa: E402
from services.intake.measures import Filters  # noqa: E402
from services.intake.model import AssignmentState, CaseState  # noqa: E402
from services.intake.store import Base as IntakeBase  # noqa: E402
from services.intake.store import assignments, cases  # noqa: E402
from services.routing.rules import route  # noqa: E402
from shared import access  # noqa: E402
from shared.db import create_tables, make_engine  # noqa: E402
from shared.grid import GridRegistry  # noqa: E402
from shared.reference import ReferenceData, load_reference  # noqa: E402

DEMO = ROOT / "deploy" / "demo"
CHUNK = 10_000


def say(text_: str) -> None:
    print(f"[bench] {text_}", flush=True)




# -- a generated district ------------------------------------------------------------------
def district(cells: int) -> dict[str, Any]:
    """A district.yaml of ``cells`` compounds: 10 compounds an area, 5 areas a community,
    ~10 communities a street (codes as the demo's: 6+3+3+1+2, buildings +3), rectangles
    tiled over the demo's box."""
    per_area, per_community = 10, 5
    areas = -(-cells // per_area)
    communities = -(-areas // per_community)
    per_street = max(1, min(999, -(-communities // 50)))
    side = int(cells ** 0.5) + 1
    w, h = 0.06 / side, 0.05 / side
    n = 0
    streets: list[dict[str, Any]] = []
    for ci in range(communities):
        si, cj = divmod(ci, per_street)
        if cj == 0:
            streets.append({"code": f"511802{si + 1:03d}", "name": f"街道{si + 1}",
                            "owner": {"name": f"街道主任{si + 1}", "role": "主任"},
                            "children": []})
        street = streets[-1]
        comm = {"code": f"{street['code']}{cj + 1:03d}", "name": f"社区{ci + 1}",
                "owner": {"name": f"书记{ci + 1}", "role": "社区党委书记"}, "children": []}
        street["children"].append(comm)
        for ai in range(per_community):
            if n >= cells:
                break
            area = {"code": f"{comm['code']}{ai + 1}", "name": f"片区{ci + 1}-{ai + 1}",
                    "owner": {"name": f"片区长{ci}-{ai}", "role": "片区长"}, "children": []}
            comm["children"].append(area)
            for ki in range(per_area):
                if n >= cells:
                    break
                x, y = 102.99 + (n % side) * w, 29.97 + (n // side) * h
                code = f"{area['code']}{ki + 1:02d}"
                area["children"].append({
                    "code": code, "name": f"小区{n + 1}",
                    "owner": {"id": f"gw-{n:06d}", "name": f"网格员{n}", "role": "网格员"},
                    "polygon": [[x, y], [x + w, y], [x + w, y + h], [x, y + h]],
                    "children": [{"code": f"{code}{b + 1:03d}", "name": f"{b + 1}栋",
                                  "owner": {"name": f"楼栋长{n}-{b}", "role": "楼栋长"}}
                                 for b in range(3)],
                })
                n += 1
    return {"version": f"bench-{cells}",
            "levels": [{"name": "district", "digits": 6}, {"name": "street", "digits": 3},
                       {"name": "community", "digits": 3}, {"name": "area", "digits": 1},
                       {"name": "compound", "digits": 2}, {"name": "building", "digits": 3}],
            "cell_level": "compound",
            "district": {"code": "511802", "name": "雨城区",
                         "owner": {"name": "张建国", "role": "主任"}, "children": streets}}


# -- seeding ---------------------------------------------------------------------------------
OPEN_STATES = [CaseState.REPORTED, CaseState.ROUTED, CaseState.RETURNED, CaseState.DISPATCHED,
               CaseState.ACKNOWLEDGED, CaseState.IN_PROGRESS, CaseState.RESOLVED]
OPEN_WEIGHTS = [2, 2, 1, 30, 35, 10, 20]
TIERS = ["compound", "area", "community", "street", "district"]
TIER_WEIGHTS = [40, 25, 20, 10, 5]


def seed(intake: Engine, escalation: Engine, ref: ReferenceData, count: int,
         now: datetime, rng: random.Random) -> dict[str, int]:
    grid, cat = ref.grid, ref.catalogue
    cells = grid.cells
    tier_codes = {c.code: {t: grid.tier_node(c, t).code for t in TIERS} for c in cells}
    buildings = {c.code: [b.code for b in c.children] for c in cells}
    categories = list(cat.categories.values())
    weights = [1.0 / (i + 1) for i in range(len(categories))]  # a few categories dominate
    year = timedelta(days=365).total_seconds()
    counts = {"cases": 0, "assignments": 0, "ledger": 0, "open": 0}
    pk = apk = 0
    t0 = time.perf_counter()
    for lo in range(0, count, CHUNK):
        crow: list[dict[str, Any]] = []
        arow: list[dict[str, Any]] = []
        lrow: list[dict[str, Any]] = []
        for i in range(lo, min(count, lo + CHUNK)):
            pk += 1
            # evenly over the year, oldest first (the order cases arrive in)
            reported = now - timedelta(seconds=year * (1 - (i + rng.random()) / count))
            age_days = (now - reported).total_seconds() / 86400
            cell = rng.choice(cells).code
            category = rng.choices(categories, weights)[0]
            if rng.random() < 0.06:
                state = CaseState.DUPLICATE
            elif (age_days > 30 and rng.random() < 0.97) or rng.random() < 0.5:
                state = CaseState.CLOSED
            else:
                state = rng.choices(OPEN_STATES, OPEN_WEIGHTS)[0]
            routed = state not in (CaseState.DUPLICATE, CaseState.REPORTED)
            tier = rng.choices(TIERS, TIER_WEIGHTS)[0] if routed else None
            closed = state == CaseState.CLOSED
            closed_at = reported + timedelta(hours=rng.uniform(2, 240)) if closed else None
            if closed_at and closed_at > now:
                closed_at = now - timedelta(minutes=1)
            ratings = []
            if closed and rng.random() < 0.3:
                ratings = [{"score": rng.choice([1, 2, 3, 4, 5, 5, 5]),
                            "fixed": rng.random() > 0.1, "comment": "",
                            "reporter_id": f"r{i}",
                            "at": (closed_at + timedelta(hours=5)).isoformat()}]
            case_id = f"{reported:%Y%m%d}-{i:07d}"
            counts["open"] += state in CaseState.OPEN
            crow.append({
                "pk": pk, "case_id": case_id, "state": state, "category": category.code,
                "severity": "urgent" if rng.random() < 0.05 else "normal",
                "grid_code": cell,
                "building_code": rng.choice(buildings[cell]) if buildings[cell]
                and rng.random() < 0.5 else None,
                "lat": None, "lng": None, "description": "楼下垃圾堆积三天无人清运",
                "reporter": {"kind": "grid_worker", "id": f"gw-{i % 500}", "name": "网格员"},
                "media_urls": [], "occurred_at": reported, "reported_at": reported,
                "updated_at": closed_at or reported, "tier": tier,
                "tier_code": tier_codes[cell][tier] if tier else None,
                "escalations": rng.choice([0, 0, 0, 0, 1, 2]) if routed else 0,
                "followers": [], "duplicate_of": None, "awaiting_dispatch": "",
                "closed_at": closed_at,
                "rate_until": closed_at + timedelta(days=7) if closed_at else None,
                "ratings": ratings,
            })
            if not routed:
                continue
            depts = [(category.lead, "lead")] + [
                (d, "assist") for d in category.departments[1:2] if rng.random() < 0.3]
            for d, role in depts:
                apk += 1
                first_due = reported + timedelta(minutes=30)
                resolve_due = reported + timedelta(days=3)
                if state in (CaseState.CLOSED, CaseState.RESOLVED):
                    a_state = AssignmentState.RESOLVED
                elif state in (CaseState.ACKNOWLEDGED, CaseState.IN_PROGRESS):
                    a_state = rng.choice([AssignmentState.ACKNOWLEDGED, AssignmentState.RESOLVED])
                elif state == CaseState.RETURNED:
                    a_state = AssignmentState.RETURNED
                else:
                    a_state = AssignmentState.DISPATCHED
                acked = a_state in (AssignmentState.ACKNOWLEDGED, AssignmentState.RESOLVED)
                ack_at = reported + timedelta(minutes=rng.uniform(1, 45)) if acked else None
                res_at = None
                if a_state == AssignmentState.RESOLVED:
                    res_at = min(closed_at or now, reported + timedelta(hours=rng.uniform(1, 200)))
                missed = res_at is not None and res_at > resolve_due
                arow.append({
                    "pk": apk, "case_pk": pk, "department": d, "role": role, "state": a_state,
                    "report_in_due": None if acked else first_due,
                    "resolve_due": resolve_due, "first_report_in_due": first_due,
                    "resolve_missed": missed, "dispatched_at": reported,
                    "acknowledged_at": ack_at, "resolved_at": res_at, "note": "",
                    "media_urls": [], "paused_at": None, "pause_reason": "",
                    "reworks": 1 if rng.random() < 0.03 else 0,
                    "return_code": "other" if a_state == AssignmentState.RETURNED else "",
                    "return_note": "",
                })
                late_ack = ack_at is None or ack_at > first_due
                if ((late_ack and age_days > 0.05) or missed) and rng.random() < 0.5:
                    kind = "resolve" if missed else "report_in"
                    due = resolve_due if missed else first_due
                    still_open = not (acked if kind == "report_in" else res_at)
                    lrow.append({
                        "case_id": case_id, "department": d, "kind": kind,
                        "state": "open" if still_open else "closed", "grid_code": cell,
                        "tier": tier, "tier_code": tier_codes[cell][tier],
                        "owner": {"name": "网格员", "role": "owner"}, "due_at": due,
                        "current_due": due + timedelta(hours=4), "opened_at": due,
                        "closed_at": None if still_open else (ack_at or res_at),
                        "close_reason": "" if still_open else "reported in",
                        "history": [{"action": "escalate", "at": due.isoformat()}],
                    })
        with intake.begin() as conn:
            conn.execute(insert(cases), crow)
            if arow:
                conn.execute(insert(assignments), arow)
        if lrow:
            with escalation.begin() as conn:
                conn.execute(insert(SupervisionItem.__table__), lrow)
        counts["cases"] += len(crow)
        counts["assignments"] += len(arow)
        counts["ledger"] += len(lrow)
        if (lo // CHUNK) % 10 == 9 or lo + CHUNK >= count:
            rate = counts["cases"] / (time.perf_counter() - t0)
            say(f"  {counts['cases']:,}/{count:,} cases ({rate:,.0f}/s)")
    if intake.dialect.name == "postgresql":  # fix the serials after explicit pks
        schema = (intake.get_execution_options().get("schema_translate_map") or {}).get(None)
        with intake.begin() as conn:
            for t in ("cases", "assignments"):
                qualified = f"{schema}.{t}" if schema else t
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{qualified}', 'pk'), "
                                  f"(SELECT max(pk) FROM {qualified}))"))
    return counts


def seeding_engine(url: str, schema: str, metadata: Any) -> Engine:
    """An engine for bulk loading: the service's tables, and on SQLite no fsync per chunk."""
    engine = make_engine(url, schema=schema)
    create_tables(engine, metadata)
    if engine.dialect.name == "sqlite":
        engine.dispose()
        engine = create_engine(url)

        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _fast(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=OFF")
            cur.close()
    return engine


# -- timing ----------------------------------------------------------------------------------
def timed(name: str, fn: Callable[[], Any], reps: int, target_ms: float,
          results: list[tuple[str, float, float]]) -> Any:
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    p50, worst = statistics.median(times), max(times)
    results.append((name, p50, worst))
    flag = "  OVER" if p50 > target_ms else ""
    print(f"  {name:<58} p50 {p50:9.1f} ms  max {worst:9.1f} ms{flag}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--cases", type=int, default=1_000_000, help="cases (default 1,000,000)")
    ap.add_argument("--pg", metavar="ADMIN_URL",
                    help="PostgreSQL admin URL (a fresh database is made and dropped)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per query (default 5)")
    ap.add_argument("--cells", type=int, default=0,
                    help="generate a district of this many cells (default: the demo's)")
    ap.add_argument("--target-ms", type=float, default=200.0, help="flag p50 over this")
    ap.add_argument("--seed", type=int, default=7, help="random seed")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--reuse", metavar="URL", help="time an existing seeded database "
                    "(intake's URL; escalation's: the same on PostgreSQL, escalation.db "
                    "beside it on SQLite)")
    ap.add_argument("--analyze", action="store_true",
                    help="run ANALYZE after seeding on SQLite too (PostgreSQL: always; "
                    "autovacuum would)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    now = datetime.now(UTC).replace(microsecond=0)
    results: list[tuple[str, float, float]] = []

    tmp = Path(tempfile.mkdtemp(prefix="gridflow-cases-"))
    if args.cells:
        data = district(args.cells)
        path = tmp / "district.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        say(f"generated a district of {args.cells:,} cells ({path.stat().st_size / 1e6:.1f} MB)")
        base = load_reference(DEMO)

        def load_grid() -> GridRegistry:
            with path.open(encoding="utf-8") as fh:
                raw = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            return GridRegistry.from_dict(raw)

        print(f"grid of {args.cells:,} cells")
        grid = timed("grid load (YAML parse + GridRegistry)", load_grid, 1, 1e9, results)
        ref = ReferenceData(grid=grid, catalogue=base.catalogue, calendar=base.calendar,
                            policy=base.policy, source=tmp)
        some = [c.code for c in rng.sample(grid.cells, 1000)]
        timed("grid.get + cell_for_code x1000", lambda: [grid.cell_for_code(c)
                                                         for c in some], 3, 1e9, results)
        timed("grid.path_codes x1000", lambda: [grid.path_codes(c) for c in some], 3, 1e9,
              results)
        pts = [(grid.get(c).polygon[0][1] + 1e-7, grid.get(c).polygon[0][0] + 1e-7)
               for c in some]
        timed("grid.locate(lat, lng) x1000", lambda: [grid.locate(*p) for p in pts], 3, 1e9,
              results)
        case = {"category": "E0101", "severity": "normal", "location": {"grid_code": some[0]}}
        timed("routing rules.route (rule lookup for a cell) x1000", lambda: [route(
            {**case, "location": {"grid_code": c}}, catalogue=ref.catalogue, grid=grid,
            calendar=ref.calendar, policies=ref.policy, at=now) for c in some], 3, 1e9, results)
    else:
        ref = load_reference(DEMO)

    name = f"bench_cases_{uuid.uuid4().hex[:8]}"
    url = None
    if args.reuse:
        intake_url = args.reuse
        esc_url = (intake_url if intake_url.startswith("postgresql")
                   else intake_url.replace("intake.db", "escalation.db"))
    elif args.pg:
        url = pg_database(args.pg, name, create=True)
        intake_url = esc_url = url
    else:
        intake_url = f"sqlite:///{tmp / 'intake.db'}"
        esc_url = f"sqlite:///{tmp / 'escalation.db'}"
    kind = "PostgreSQL" if intake_url.startswith("postgresql") else "SQLite"
    try:
        if not args.reuse:
            say(f"seeding {args.cases:,} cases into a fresh {kind} database "
                f"({url or tmp}) …")
            t0 = time.perf_counter()
            si = seeding_engine(intake_url, "intake", IntakeBase.metadata)
            se = seeding_engine(esc_url, "escalation", EscalationBase.metadata)
            if url:
                si = si.execution_options(schema_translate_map={None: "intake"})
                se = se.execution_options(schema_translate_map={None: "escalation"})
            counts = seed(si, se, ref, args.cases, now, rng)
            seeded = time.perf_counter() - t0
            say(f"seeded {counts['cases']:,} cases ({counts['open']:,} open), "
                f"{counts['assignments']:,} assignments, {counts['ledger']:,} ledger items "
                f"in {seeded:.1f} s")
            t0 = time.perf_counter()
            for e in (si, se):
                with e.connect() as conn:
                    if e.dialect.name == "postgresql":
                        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                            "VACUUM ANALYZE")
                    elif args.analyze:
                        conn.exec_driver_sql("ANALYZE")
                e.dispose()
            say(f"{'VACUUM ANALYZE' if url else 'ANALYZE' if args.analyze else 'no ANALYZE'}"
                f" in {time.perf_counter() - t0:.1f} s")
        # the services' own engines, as they run
        ie = make_engine(intake_url, schema="intake")
        create_tables(ie, IntakeBase.metadata)  # what a service start does (new indexes)
        ee = make_engine(esc_url, schema="escalation")
        create_tables(ee, EscalationBase.metadata)
        run_queries(ie, ee, ref, now, args, results, rng)
        ie.dispose()
        ee.dispose()
    finally:
        if url and not args.keep:
            pg_database(args.pg, name, create=False)
        elif url:
            say(f"kept {url}")
        elif not args.reuse:
            say(f"database in {tmp} (remove it when done)")
    over = [r for r in results if r[1] > args.target_ms]
    print(f"\n{len(results) - len(over)}/{len(results)} queries ≤ {args.target_ms:.0f} ms p50"
          + (": over: " + ", ".join(r[0] for r in over) if over else ""))
    return 0


def run_queries(ie: Engine, ee: Engine, ref: ReferenceData, now: datetime,
                args: argparse.Namespace, results: list[tuple[str, float, float]],
                rng: random.Random) -> None:
    grid, cat = ref.grid, ref.catalogue
    street = grid.root.children[0]
    community = street.children[0]
    cell = rng.choice(grid.cells)
    dept = next(iter(cat.departments))
    month = Filters(since=now - timedelta(days=30))
    clock = ClockEngine(ref, "escalation", claim_with_skip_locked=ie.dialect.name != "sqlite")
    operator = access.Principal(key_id="k", client="bench", role=access.OPERATOR,
                                grid=community.code)
    reps, target = args.reps, args.target_ms

    def on(engine: Engine, fn: Callable[[Session], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with Session(engine) as s:
                return fn(s)
        return run

    def t(name: str, engine: Engine, fn: Callable[[Session], Any]) -> Any:
        return timed(name, on(engine, fn), reps, target, results)

    def http_list(**kw: Any) -> Callable[[Session], Any]:
        base = {"state": None, "grid": None, "department": None, "page": 1, "per_page": 50}
        return lambda s: views.list_cases(s, **{**base, **kw})

    print(f"\nqueries ({ie.dialect.name}), {reps} runs each")
    print("intake HTTP: GET /api/v1/cases (views.list_cases) and /health")
    t("list page 1", ie, http_list())
    t("list page 200 (per_page 50)", ie, http_list(page=200))
    with Session(ie) as s:
        deep = s.execute(select(cases.c.reported_at, cases.c.pk)
                         .order_by(cases.c.reported_at.desc(), cases.c.pk.desc())
                         .offset(min(99_950, max(0, args.cases - 50)))).first()
    t("list page 2,000 (OFFSET 99,950)", ie, http_list(page=2000))
    if deep is not None:
        t("list at the same depth, keyset (after=)", ie, http_list(after=tuple(deep)))
    t("list state=dispatched", ie, http_list(state=CaseState.DISPATCHED))
    t("list state=closed page 100", ie, http_list(state=CaseState.CLOSED, page=100))
    t(f"list grid={street.code} (street)", ie, http_list(grid=street.code))
    t(f"list grid={cell.code} (cell)", ie, http_list(grid=cell.code))
    t(f"list department={dept}", ie, http_list(department=dept))
    t(f"list department={dept} state=acknowledged", ie,
      http_list(department=dept, state=CaseState.ACKNOWLEDGED))
    narrowed = access.narrowed_grid(operator, None, grid.path_codes)
    t(f"list scoped key (operator of {community.code})", ie, http_list(grid=narrowed))
    t("health: open cases counted", ie, lambda s: s.scalar(
        select(func.count()).where(cases.c.state.in_(CaseState.OPEN))))

    print("intake: funnel / measures (HTTP stats, RPC for the monitor)")
    t("funnel, whole history, district", ie,
      lambda s: queries.funnel(s, grid, Filters(), cat))
    t("funnel, last 30 days, district (monitor default)", ie,
      lambda s: queries.funnel(s, grid, month, cat))
    t(f"funnel, last 30 days, street {street.code}", ie,
      lambda s: queries.funnel(s, grid, Filters(since=month.since, grid=street.code), cat))
    t(f"funnel, whole history, community {community.code}", ie,
      lambda s: queries.funnel(s, grid, Filters(grid=community.code), cat))
    t(f"funnel, last 30 days, department {dept}", ie,
      lambda s: queries.funnel(s, grid, Filters(since=month.since, department=dept), cat))
    t("measures, whole history, district", ie,
      lambda s: queries.measures(s, grid, cat, Filters(), now))
    t("measures, last 30 days, district (monitor default)", ie,
      lambda s: queries.measures(s, grid, cat, month, now))
    t(f"measures, last 30 days, street {street.code}", ie,
      lambda s: queries.measures(s, grid, cat, Filters(since=month.since, grid=street.code),
                                 now))
    t(f"measures, last 30 days, department {dept}", ie,
      lambda s: queries.measures(s, grid, cat, Filters(since=month.since, department=dept),
                                 now))

    print("intake RPC: the monitor's case list (queries.case_list)")
    t("cases, last 30 days, limit 50 (monitor default)", ie,
      lambda s: queries.case_list(s, month, limit=50, grid=grid, catalogue=cat))
    t("cases, whole history, limit 50", ie,
      lambda s: queries.case_list(s, Filters(), limit=50, grid=grid, catalogue=cat))
    t("cases, open, whole history", ie,
      lambda s: queries.case_list(s, Filters(), "open", limit=50, grid=grid, catalogue=cat))
    t("cases, tier=street, last 30 days", ie,
      lambda s: queries.case_list(s, month, tier="street", limit=50, grid=grid, catalogue=cat))
    t("cases, whole history, offset 10,000", ie,
      lambda s: queries.case_list(s, Filters(), limit=50, offset=10_000, grid=grid,
                                  catalogue=cat))
    t(f"cases, last 30 days, community {community.code}", ie,
      lambda s: queries.case_list(s, Filters(since=month.since, grid=community.code),
                                  limit=50, grid=grid, catalogue=cat))

    print("escalation: the ledger (Engine.ledger, over RPC)")
    t("ledger state=open per_page 200 (monitor)", ee,
      lambda s: clock.ledger(s, now=now, state="open", per_page=200))
    t("ledger, all, per_page 200", ee, lambda s: clock.ledger(s, now=now, per_page=200))
    t(f"ledger state=open grid={community.code}", ee,
      lambda s: clock.ledger(s, now=now, state="open", grid=community.code))
    t(f"ledger state=open department={dept}", ee,
      lambda s: clock.ledger(s, now=now, state="open", department=dept))
    t("ledger state=closed page 50", ee,
      lambda s: clock.ledger(s, now=now, state="closed", page=50))


if __name__ == "__main__":
    sys.exit(main())
