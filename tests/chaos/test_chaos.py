"""The short chaos run in the suite: 1,000 reports while one service is killed with
SIGKILL, RabbitMQ restarts and poison lands on every queue; nothing may be lost or doubled.
The full run (10,000 reports, every service killed) is ``tests/chaos/run.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import ChaosRun, Plan

pytestmark = pytest.mark.e2e


def test_short_chaos_run_loses_and_doubles_nothing(
    database_url: str | None, tmp_path: Path
) -> None:
    run = ChaosRun(Plan(reports=1_000, rate=50, faults=("poison", "routing", "broker", "poison"),
                        database_url=database_url, workdir=tmp_path, settle_timeout_s=120))
    verdict = run.run()
    print(verdict.table())
    assert not verdict.problems, f"{verdict.table()}\n{run.logs()}"
    assert verdict.kills["routing"] == 1 and verdict.broker_restarts == 1
    assert verdict.poison_sent == verdict.poison_dead_lettered > 0
    assert verdict.dispatches_received == verdict.dispatches_expected > 1_000
