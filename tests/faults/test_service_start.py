"""A service process started (or restarted by the supervisor) while its database is down.

It must wait for the database and start once it answers, not exit: the supervisor restarts
a child that exits at once, gives up after five exits within a minute, and an outage longer
than a few seconds would leave the service down until someone restarts it by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from faultkit import only_on
from nameko.testing.utils import find_free_port
from proxy import FaultProxy

from support import bearer, issue_key, wait_for

ROOT = Path(__file__).resolve().parents[2]


def healthy(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def intake_process(
    pg_proxy: FaultProxy,
    database_url: str,
    amqp_uri_pika: str,
    tmp_path: Path,
) -> Iterator[Any]:
    port = find_free_port()
    log_path = tmp_path / "intake.log"
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[subprocess.Popen[bytes], str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "AMQP_URI": amqp_uri_pika,
            "DATABASE_URL": pg_proxy.url(database_url),
            "GRIDFLOW_VAR_DIR": str(tmp_path / "var"),
            "GRIDFLOW_HTTP_ADDRESS": f"127.0.0.1:{port}",
            "GRIDFLOW_DB_CONNECT_TIMEOUT_S": "2",
            "GRIDFLOW_START_MAX_BACKOFF_S": "1",
            "GRIDFLOW_SERVICE": "intake",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridflow.run_service", "intake"],
            cwd=ROOT, env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    pg_proxy.restore()
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@only_on("postgresql")
def test_service_started_while_its_database_is_down_waits_for_it(
    pg_proxy: FaultProxy, intake_process: Any, tmp_path: Path, database_url: str
) -> None:
    pg_proxy.cut()
    proc, base_url = intake_process()
    time.sleep(2.5)  # several attempts to reach the database
    log = (tmp_path / "intake.log").read_text()
    assert proc.poll() is None, f"intake exited (code {proc.returncode}) instead of waiting:\n{log}"
    assert "database" in log and "unreachable" in log, log[-2000:]
    pg_proxy.restore()
    wait_for(lambda: healthy(base_url), timeout=20, what="intake up once its database answers")
    key = issue_key(database_url, tmp_path / "var")
    r = requests.post(f"{base_url}/api/v1/reports", timeout=10, headers=bearer(key), json={
        "report_id": "after-start", "category": "E0801", "grid_code": "511802001001101",
        "description": "独居老人需要照护",
        "reporter": {"kind": "grid_worker", "id": "gw-1", "name": "邓海燕", "phone": "13800000001"},
    })
    assert r.status_code == 201, r.text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@only_on("postgresql")
def test_service_waiting_for_its_database_stops_at_once_when_asked(
    pg_proxy: FaultProxy, intake_process: Any
) -> None:
    pg_proxy.cut()
    proc, _ = intake_process()
    time.sleep(2)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0  # a clean stop (giving up on a start that hangs exits with 1)
