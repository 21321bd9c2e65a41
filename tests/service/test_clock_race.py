"""Two escalation instances race over 10,000 due clocks: none fires twice, none is missed.

The instances are two processes (``tests/clockload.py fire``) on one database, as two
escalation services would be: on PostgreSQL they claim with ``FOR UPDATE SKIP LOCKED``,
on SQLite with a fenced update inside ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clockload import escalation_engine, fire_all, seed
from sqlalchemy import func, select

from services.escalation.store import CaseRow, Clock, Outbox, SupervisionItem
from shared.db import service_database_url

COUNT = 10_000
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
SCRIPT = Path(__file__).resolve().parents[1] / "clockload.py"


def race(url: str) -> list[dict[str, int]]:
    """Two processes fire every clock due at NOW, as two escalation instances would."""
    env = {**os.environ, "GRIDFLOW_LOG_LEVEL": "WARNING"}
    racers = [
        subprocess.Popen([sys.executable, str(SCRIPT), "fire", url, NOW.isoformat()],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    results = []
    for p in racers:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out))
    return results


def escalations_per_case(engine: Any) -> dict[int, int]:
    """How many cases were escalated how often: {times: cases}."""
    with engine.connect() as conn:
        rows = conn.execute(select(Outbox.case_id, func.count()).where(
            Outbox.type == "case.escalated").group_by(Outbox.case_id)).all()
    return dict(Counter(n for _, n in rows))


def test_two_instances_fire_every_due_clock_exactly_once(
    database_url: str | None, tmp_path: Path
) -> None:
    url = service_database_url("escalation", database_url, tmp_path)
    engine = escalation_engine(url)
    # every report-in clock is due (spread over the last 100 minutes); resolves are not
    seed(engine, COUNT, NOW - timedelta(minutes=100), timedelta(seconds=0.6))
    results = race(url)

    claimed = [r["claimed"] for r in results]
    assert sum(claimed) == COUNT, claimed
    if database_url:  # SKIP LOCKED shares the work; SQLite's one writer may starve the other
        assert min(claimed) > 0, f"one instance did all the work: {claimed}"
    with engine.connect() as conn:
        fired = dict(conn.execute(select(Clock.fired, func.count()).where(
            Clock.kind == "report_in").group_by(Clock.fired)).all())
        assert fired == {1: COUNT}  # no doubles (2), no misses (0)
        assert conn.scalar(select(func.count()).select_from(Clock).where(
            Clock.kind == "resolve", Clock.fired > 0)) == 0  # not due: untouched
        escalated = conn.execute(select(Outbox.case_id, func.count()).where(
            Outbox.type == "case.escalated").group_by(Outbox.case_id)).all()
        assert len(escalated) == COUNT and {n for _, n in escalated} == {1}
        assert conn.scalar(select(func.count()).select_from(SupervisionItem)) == COUNT
    engine.dispose()


def test_clocks_of_one_case_falling_due_together_escalate_it_once(
    database_url: str | None, tmp_path: Path
) -> None:
    """Two departments miss the same report-in deadline of a case: the case moves up one
    tier, once — also when two instances race, and when a batch ends between the clocks."""
    url = service_database_url("escalation", database_url, tmp_path)
    engine = escalation_engine(url)
    cases = 2_000
    seed(engine, cases, NOW - timedelta(minutes=30), timedelta(seconds=0.5),
         departments=("urban_mgmt", "police"))
    results = race(url)
    assert sum(r["claimed"] for r in results) == 2 * cases
    assert escalations_per_case(engine) == {1: cases}
    with engine.connect() as conn:
        steps = dict(conn.execute(select(CaseRow.step, func.count()).group_by(CaseRow.step)).all())
    assert steps == {1: cases}  # one tier up, not two

    seed(engine, 10, NOW - timedelta(minutes=5), timedelta(seconds=1),
         departments=("urban_mgmt", "police"), start=cases)
    fire_all(engine, NOW, batch=1)  # one clock a batch: the limit falls inside every case
    assert escalations_per_case(engine) == {1: cases + 10}
    engine.dispose()
