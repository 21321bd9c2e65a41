"""The district-day simulator against the real services as processes, on a fast demo clock:
within half a minute cases are reported, departments report in and resolve, cases are
verified, closed and rated, and late departments make cases escalate onto the ledger.
``gridflow up`` starts the simulator as a supervised child on the demo clock.
(SQLite only: the simulator is a client, the backends are covered elsewhere.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
import requests
from nameko.testing.utils import find_free_port
from processes import admin_key, distinct_ports, healthy, running, session

from gridflow import PIPELINE
from shared.clock import ScaledClock, working_morning
from shared.reference import load_reference
from support import stop_and_read, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

SPEED = 1500  # 30 real seconds = 12.5 demo hours; a 30-minute deadline passes in 1.2 s
SECONDS = 30


OTHERS = ("escalation", "routing", "notify", "monitor")


def ports_env(amqp_uri: str, var_dir: Path, http: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "AMQP_URI": amqp_uri,
        "GRIDFLOW_VAR_DIR": str(var_dir),
        "GRIDFLOW_HTTP_ADDRESS": http,
        "GRIDFLOW_PUBLIC_URL": f"http://{http}",
        **{f"GRIDFLOW_{s.upper()}_HTTP_ADDRESS": f"127.0.0.1:{p}" for s, p in zip(
            OTHERS, distinct_ports(len(OTHERS), taken=[int(http.rsplit(":", 1)[1])]),
            strict=True)},
    }


def stats_of(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"\b([a-z_0-9]+)=(\d+)\b", line)}


def all_cases(http: requests.Session, base: str) -> list[dict[str, Any]]:
    out, page = [], 1
    while True:
        got = http.get(f"{base}/api/v1/cases", params={"per_page": 100, "page": page},
                       timeout=10).json()
        out += got["items"]
        if not got["items"] or len(out) >= got["total"]:
            return out
        page += 1


def test_help_lists_the_new_options() -> None:
    def help_of(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "gridflow.cli", *args, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30, check=True).stdout

    up = help_of("up")
    for option in ("--speed", "--rate", "--no-simulator"):
        assert option in up
    simulate = help_of("simulate")
    for option in ("--rate", "--speed", "--intake", "--amqp-uri", "--seed", "--duration",
                   "--late", "--api-key", "GRIDFLOW_API_KEY", "--patrol-key",
                   "--department-key"):
        assert option in simulate
    assert "admin key" in simulate  # the role it needs


def test_a_simulated_day_reports_acks_resolves_closes_rates_and_escalates(
        amqp_uri_pika: str, tmp_path: Path) -> None:
    http = f"127.0.0.1:{find_free_port()}"
    base = f"http://{http}"
    now = datetime.now(UTC)
    clock = ScaledClock(working_morning(load_reference(ROOT / "deploy" / "demo").calendar, now),
                        now, SPEED)
    env = {**ports_env(amqp_uri_pika, tmp_path / "var", http), **clock.env(),
           "GRIDFLOW_AUDIT_MARGIN_S": str(60 * SPEED)}
    argv = [sys.executable, "-m", "gridflow.cli", "simulate", "--intake", base,
            "--amqp-uri", amqp_uri_pika, "--rate", "60", "--speed", str(SPEED),
            "--late", "0.3", "--seed", "11", "--duration", str(SECONDS), "--every", "5"]
    with running(env, tmp_path / "logs", base, PIPELINE, amqp_uri=amqp_uri_pika) as procs:
        http = procs.http
        # a key intake does not know stops the simulator at once, saying why
        bogus = "gfk_000000000000_" + "x" * 43
        refused = subprocess.run(argv, cwd=ROOT, env={**env, "GRIDFLOW_API_KEY": bogus},
                                 capture_output=True, text=True, timeout=30)
        out = refused.stdout + refused.stderr
        assert refused.returncode == 3, out
        assert "401 unknown API key" in out and "admin API key" in out, out
        assert "Traceback" not in out and bogus not in out, out

        sim_env = {**env, "GRIDFLOW_API_KEY": admin_key(env, client="simulator")}
        sim = subprocess.run(argv, cwd=ROOT, env=sim_env, capture_output=True, text=True,
                             timeout=SECONDS + 30)
        out = sim.stdout + sim.stderr
        assert sim.returncode == 0, out
        assert "Traceback" not in out, out
        final = next(line for line in out.splitlines() if "stopped:" in line)
        stats = stats_of(final)
        print(final)

        cases = all_cases(http, base)
        states = Counter(c["state"] for c in cases)
        print(f"{len(cases)} cases: {dict(states)}")
        assert len(cases) >= 10 and stats["reports"] == len(cases)
        views = [http.get(f"{base}/api/v1/cases/{c['case_id']}", timeout=10).json()
                 for c in cases]
        kinds = Counter(t["kind"] for v in views for t in v["timeline"])
        print(dict(kinds))
        assert kinds["acknowledged"] >= 10 and kinds["resolved"] >= 5

        def timeline_counts() -> Counter[str]:
            return Counter(t["kind"] for c in cases for t in http.get(
                f"{base}/api/v1/cases/{c['case_id']}", timeout=10).json()["timeline"])

        # every answer landed (those over AMQP too), none twice
        wait_for(lambda: (lambda k: k["acknowledged"] == stats["acked"]
                          and k["resolved"] == stats["resolved"])(timeline_counts()),
                 timeout=10, interval=0.5, what="the answers in the timelines")
        assert states["closed"] + states["resolved"] + states["in_progress"] >= 3
        closed = [v for v in views if v["closed_at"] or v["state"] == "closed"]
        assert closed and kinds["verified"] >= 1 and kinds["closed"] >= 1
        assert sum(len(v["ratings"]) for v in views) >= 1 and kinds["rated"] == stats["rated"]
        escalated = [c for c in cases if c["escalations"]]
        assert escalated and kinds["escalated"] >= 1 and stats["escalated"] >= 1
        ledger = http.get(f"{base}/api/v1/supervision", timeout=15).json()
        assert ledger["total"] >= 1
        assert stats["late"] >= 1
        # nothing the simulator sent was malformed or lost
        assert stats.get("rejected", 0) == stats.get("unreachable", 0) == 0, final
        assert stats.get("5xx", 0) == 0, final
        conn = pika.BlockingConnection(pika.URLParameters(amqp_uri_pika))
        try:
            dlq = conn.channel().queue_declare("gridflow.responses.dlq", passive=True)
            assert dlq.method.message_count == 0  # no AMQP answer refused
        finally:
            conn.close()


def test_up_runs_the_simulator_on_the_demo_clock_and_stops_it(amqp_uri_pika: str,
                                                              tmp_path: Path) -> None:
    http = f"127.0.0.1:{find_free_port()}"
    var = tmp_path / "var"
    env = ports_env(amqp_uri_pika, var, http)
    # the simulator's key (gridflow up passes its own demo admin key; this one works
    # either way), and the test's
    key = admin_key(env)
    env["GRIDFLOW_API_KEY"] = key
    api = session(key)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridflow.cli", "up", "--services", *PIPELINE,
         "--speed", "600", "--rate", "120"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: healthy(f"http://{http}"), timeout=60, what="intake up")
        wait_for(lambda: api.get(f"http://{http}/api/v1/cases", timeout=5).json()["total"],
                 timeout=30, what="the simulator's first report")
        case = api.get(f"http://{http}/api/v1/cases", timeout=5).json()["items"][-1]
        reported = datetime.fromisoformat(case["reported_at"])
        saved = json.loads((var / "demo-clock.json").read_text())
        demo_now = ScaledClock(datetime.fromisoformat(saved["GRIDFLOW_CLOCK_START"]),
                               datetime.fromisoformat(saved["GRIDFLOW_CLOCK_EPOCH"]), 600).now()
    finally:
        out = stop_and_read(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert re.search(r"started simulator\s+pid", out), out
    assert "monitor         http://" in out and "--no-simulator" in out
    assert "speed 600" in out and "all services stopped" in out
    saved = json.loads((var / "demo-clock.json").read_text())
    assert saved["GRIDFLOW_CLOCK_SPEED"] == "600"
    start = datetime.fromisoformat(saved["GRIDFLOW_CLOCK_START"])
    assert start.astimezone(load_reference(ROOT / "deploy" / "demo").calendar.tz).strftime(
        "%H:%M") == "08:30"
    assert start <= reported <= demo_now  # the case carries demo time, not real time
    assert datetime.fromisoformat(saved["demo_now"]) > reported
    log = (var / "log" / "simulator.log").read_text()
    assert "simulating run" in log and "stopped:" in log, log
