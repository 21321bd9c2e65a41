"""Benchmark: how late does a missed deadline escalate, with 100,000 open clocks?

Seeds ``--open`` routed cases into a fresh escalation database (each with a running
report-in and a running resolve clock, so twice as many clock rows), of which
``--rate`` × ``--seconds`` report-in clocks fall due during the run, evenly spread; the
others are due days later and just sit in the table. Then it starts the escalation service
as a process (its real ticker, ``--tick`` seconds) on a fresh RabbitMQ vhost, and a pika
consumer on ``gridflow.events`` times every ``case.escalated``: lag = arrival − due time.

    .venv/bin/python tests/bench/escalation_lag.py                    # SQLite
    .venv/bin/python tests/bench/escalation_lag.py --pg postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
from sqlalchemy.orm import sessionmaker

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from clockload import escalation_engine, seed  # noqa: E402
from common import pct, pg_database, vhost  # noqa: E402

from services.escalation.engine import Engine as ClockEngine  # noqa: E402
from shared.db import is_postgres, service_database_url  # noqa: E402
from shared.reference import load_reference  # noqa: E402


def say(text_: str) -> None:
    print(f"[bench] {text_}", flush=True)




def due_query_ms(engine: Any, first_due: datetime, reps: int = 20) -> dict[str, float]:
    """Median time of the ticker's claim query (a batch of 500, rolled back), of the
    metrics' count of due clocks and of the auditor's report, with every clock in place."""
    clock_engine = ClockEngine(load_reference(ROOT / "deploy" / "demo"), "escalation",
                               claim_with_skip_locked=is_postgres(engine))
    sessions = sessionmaker(engine)
    at = first_due + timedelta(seconds=5)
    out: dict[str, list[float]] = {"claim 500": [], "clocks_due": [], "audit": []}
    for _ in range(reps):
        with sessions() as s:
            t = time.perf_counter()
            clock_engine.claim_due(s, at, 500)
            out["claim 500"].append(time.perf_counter() - t)
            s.rollback()
        with sessions() as s:
            t = time.perf_counter()
            clock_engine.clocks_due(s, at)
            out["clocks_due"].append(time.perf_counter() - t)
            t = time.perf_counter()
            clock_engine.audit(s, at, timedelta(seconds=60))
            out["audit"].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--open", type=int, default=100_000, help="open cases (default 100,000)")
    ap.add_argument("--rate", type=float, default=100.0, help="clocks falling due per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long clocks fall due")
    ap.add_argument("--tick", type=float, default=0.25, help="ticker interval (GRIDFLOW_TICK_S)")
    ap.add_argument("--pg", metavar="ADMIN_URL", help="PostgreSQL (a fresh database is made)")
    args = ap.parse_args()
    due_count = min(args.open, int(args.rate * args.seconds))

    name = f"bench_{uuid.uuid4().hex[:8]}"
    vhost(name, create=True)
    amqp = f"amqp://guest:guest@127.0.0.1:5672/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="gridflow-bench-"))
    url = pg_database(args.pg, name, create=True) if args.pg else None
    db_url = service_database_url("escalation", url, tmp)
    proc = None
    try:
        engine = escalation_engine(db_url)
        lead = 12.0 + due_count / 20_000  # time to seed the due ones, then to start
        say(f"seeding {args.open:,} open cases ({2 * args.open:,} clocks) into "
            f"{'PostgreSQL' if url else 'SQLite'}; {due_count:,} report-in clocks fall due "
            f"over {args.seconds:.0f} s, from {lead:.0f} s after seeding …")
        t0 = time.perf_counter()
        if args.open > due_count:  # the clocks that just sit there first, however long
            seed(engine, args.open - due_count, datetime.now(UTC) + timedelta(days=3),
                 timedelta(seconds=1), start=due_count)
        first_due = datetime.now(UTC) + timedelta(seconds=lead)
        seed(engine, due_count, first_due, timedelta(seconds=1 / args.rate))
        say(f"seeded in {time.perf_counter() - t0:.1f} s")
        say("the due-clock queries at this size: " + ", ".join(
            f"{k} {v:.2f} ms" for k, v in due_query_ms(engine, first_due).items()))
        engine.dispose()

        conn = pika.BlockingConnection(pika.URLParameters(amqp))
        ch = conn.channel()
        ch.exchange_declare("gridflow.events", "topic", durable=True,
                            arguments={"alternate-exchange": "gridflow.unrouted"})
        ch.exchange_declare("gridflow.unrouted", "fanout", durable=True)
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "gridflow.events", "case.escalated")

        env = {**os.environ, "AMQP_URI": amqp, "GRIDFLOW_VAR_DIR": str(tmp),
               "GRIDFLOW_TICK_S": str(args.tick), "GRIDFLOW_LOG_LEVEL": "WARNING",
               "GRIDFLOW_ESCALATION_HTTP_ADDRESS": "127.0.0.1:0"}
        if url:
            env["DATABASE_URL"] = url
        proc = subprocess.Popen([sys.executable, "-m", "gridflow.run_service", "escalation"],
                                cwd=ROOT, env=env, stderr=subprocess.PIPE)
        say(f"escalation started (tick {args.tick} s); timing case.escalated …")
        lags: list[float] = []
        deadline = time.monotonic() + lead + args.seconds + 60
        for method, _props, body in ch.consume(q, auto_ack=True, inactivity_timeout=1):
            now = datetime.now(UTC)
            if method is not None:
                missed = json.loads(body)["data"]["missed"]
                due = max(datetime.fromisoformat(m["due_at"]) for m in missed)
                lags.append((now - due).total_seconds())
                if len(lags) % max(1, due_count // 5) == 0:
                    say(f"  {len(lags):,}/{due_count:,} escalated")
            if len(lags) >= due_count or time.monotonic() > deadline:
                break
            if proc.poll() is not None:
                say("escalation exited:\n" + proc.stderr.read().decode()[-2000:])
                return 1
        conn.close()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            vhost(name, create=False)
        except OSError as exc:  # requests' timeouts are OSErrors: say so, still print the lags
            say(f"vhost {name} not deleted ({exc}); delete it by hand")
        if url:
            pg_database(args.pg, name, create=False)

    print()
    print(f"open cases {args.open:,} ({2 * args.open:,} clock rows), "
          f"{'PostgreSQL' if url else 'SQLite'}, tick {args.tick} s, "
          f"{args.rate:.0f} clocks/s falling due")
    if not lags:
        print("no escalation arrived")
        return 1
    print(f"escalated {len(lags):,}/{due_count:,}; lag due → case.escalated (s): "
          f"p50 {pct(lags, 50):.3f}  p95 {pct(lags, 95):.3f}  p99 {pct(lags, 99):.3f}  "
          f"max {max(lags):.3f}")
    return 0 if len(lags) == due_count else 1


if __name__ == "__main__":
    sys.exit(main())
