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
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clockload import escalation_engine, seed
from sqlalchemy import func, select

from services.escalation.store import Clock, Outbox, SupervisionItem
from shared.db import service_database_url

COUNT = 10_000
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
SCRIPT = Path(__file__).resolve().parents[1] / "clockload.py"


def test_two_instances_fire_every_due_clock_exactly_once(
    database_url: str | None, tmp_path: Path
) -> None:
    url = service_database_url("escalation", database_url, tmp_path)
    engine = escalation_engine(url)
    # every report-in clock is due (spread over the last 100 minutes); resolves are not
    seed(engine, COUNT, NOW - timedelta(minutes=100), timedelta(seconds=0.6))
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
