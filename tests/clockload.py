"""Many escalation clocks in a real database: seeding them, and firing them from a process.

Used by the race test (two processes firing the same 10,000 due clocks) and by the
escalation-lag benchmark. As a script it is one ticking instance:

    python tests/clockload.py fire <database url> <now, ISO 8601>

fires every clock due at ``now`` in batches, as the escalation service's ticker does, and
prints ``{"claimed": …, "batches": …}``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import time  # noqa: E402

from sqlalchemy import Engine, func, insert, select  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from services.escalation.engine import Engine as ClockEngine  # noqa: E402
from services.escalation.store import Base, CaseRow, Clock, Inbox, Outbox  # noqa: E402
from shared.db import create_tables, is_postgres, make_engine  # noqa: E402
from shared.reference import load_reference  # noqa: E402
from shared.unit_of_work import UnitOfWork  # noqa: E402

DEMO = ROOT / "deploy" / "demo"
CELL = "511802001001101"  # 通工小区
DEPARTMENT = "sanitation"


def escalation_engine(url: str) -> Engine:
    """The escalation service's database (its own schema on PostgreSQL), tables created."""
    engine = make_engine(url, schema="escalation")
    create_tables(engine, Base.metadata)
    return engine


def seed(engine: Engine, count: int, first_due: datetime, spacing: timedelta,
         *, category: str = "E0101", start: int = 0, chunk: int = 5000,
         departments: tuple[str, ...] = (DEPARTMENT,)) -> None:
    """``count`` routed cases, an assignment for each of ``departments``: a running
    report-in clock due at ``first_due + i * spacing`` and a running resolve clock a day
    after it (the departments' clocks of a case fall due together)."""
    ref = load_reference(DEMO)
    cat = ref.catalogue.get(category)
    assert cat is not None
    snapshot = ref.policy.snapshot(cat, "normal", ref.grid)
    cell, _ = ref.grid.cell_for_code(CELL)
    tier = ref.grid.tier_info(cell, snapshot["start"])
    for lo in range(start, start + count, chunk):
        hi = min(lo + chunk, start + count)
        cases: list[dict[str, Any]] = []
        clocks: list[dict[str, Any]] = []
        for i in range(lo, hi):
            case_id = f"load-{i:08d}"
            due = first_due + spacing * (i - start)
            cases.append({"case_id": case_id, "grid_code": CELL, "step": 0,
                          "tier": tier["tier"], "tier_code": tier["code"], "escalations": 0,
                          "policy": snapshot, "updated_at": first_due})
            for n, department in enumerate(departments):
                for kind, at in (("report_in", due), ("resolve", due + timedelta(days=1))):
                    clocks.append({"case_id": case_id, "department": department,
                                   "role": "assist" if n else "lead", "kind": kind,
                                   "state": "running", "due_at": at, "step": 0, "repeats": 0,
                                   "working": False, "fired": 0, "version": 1})
        with engine.begin() as conn:
            conn.execute(insert(CaseRow), cases)
            conn.execute(insert(Clock), clocks)


def fire_all(engine: Engine, now: datetime, batch: int = 500) -> dict[str, int]:
    """Fire every clock due at ``now``, batch by batch, as one escalation instance would."""
    clock_engine = ClockEngine(load_reference(DEMO), "escalation",
                               claim_with_skip_locked=is_postgres(engine))
    sessions = sessionmaker(engine, expire_on_commit=False)
    claimed = batches = 0
    while True:
        with UnitOfWork(sessions(), producer="escalation", now=now, outbox=Outbox,
                        inbox=Inbox) as tx:
            n, _moved = clock_engine.fire_due(tx, now, batch)
        claimed += n
        batches += 1
        if n == 0:
            if not due_count(engine, now):  # none left, not even rows another instance holds
                return {"claimed": claimed, "batches": batches}
            time.sleep(0.05)


def due_count(engine: Engine, now: datetime) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Clock).where(
            Clock.state == "running", Clock.due_at <= now)) or 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "fire":
        sys.exit(__doc__)
    print(json.dumps(fire_all(escalation_engine(sys.argv[2]),
                              datetime.fromisoformat(sys.argv[3]))), flush=True)
