"""Benchmark: HTTP accept → dispatch received, through all four services.

Starts the four services as processes on a fresh RabbitMQ vhost and a fresh database
(SQLite files in a temporary folder, or PostgreSQL with ``--database-url``), then:

1. posts ``--count`` reports one at a time and times each from the POST to the moment a
   pika consumer on ``dispatch.civil_affairs`` has the assignment (latency percentiles);
2. posts ``--count`` reports from ``--clients`` concurrent clients as fast as they go and
   counts dispatches per second at the department's queue (throughput).

    .venv/bin/python tests/bench/dispatch_latency.py --count 300 --clients 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pika
import pika.exceptions
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from common import pct, vhost  # noqa: E402

from gridflow import PIPELINE  # noqa: E402
from support import bearer, issue_key, stop_processes  # noqa: E402

API = "http://127.0.0.1:{port}"
QUEUE = "dispatch.civil_affairs"


def body(tag: str) -> dict:
    return {
        "report_id": f"bench-{tag}-{uuid.uuid4().hex[:12]}",
        # 独居老人照护 → civil affairs, one assignment; never a duplicate of an open case
        # (暴露垃圾 in one cell was: every report after the first, and no dispatch)
        "category": "E0801",
        "grid_code": "511802001001101",
        "description": "独居老人需要照护",
        "reporter": {"kind": "grid_worker", "id": "gw-0001"},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200, help="reports per phase (default 200)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients in phase 2")
    ap.add_argument("--port", type=int, default=8055, help="intake port for the run")
    ap.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temp dir)")
    ap.add_argument("--rabbit-api", default="http://127.0.0.1:15672")
    args = ap.parse_args()

    name = f"bench_{uuid.uuid4().hex[:8]}"
    vhost(name, create=True, api=args.rabbit_api)
    amqp = f"amqp://guest:guest@127.0.0.1:5672/{name}"
    api = API.format(port=args.port)
    tmp = Path(tempfile.mkdtemp(prefix="gridflow-bench-"))
    env = {
        **os.environ,
        "AMQP_URI": amqp,
        "GRIDFLOW_VAR_DIR": str(tmp),
        "GRIDFLOW_HTTP_ADDRESS": f"127.0.0.1:{args.port}",
        "GRIDFLOW_LOG_LEVEL": "WARNING",
        # health and metrics of the others on ports of their own, away from a running demo
        **{f"GRIDFLOW_{s.upper()}_HTTP_ADDRESS": "127.0.0.1:0"
           for s in ("routing", "escalation", "notify")},
    }
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    # an admin key without a rate limit (GRIDFLOW_RATE_LIMIT_PER_MIN would throttle phase 2)
    auth = bearer(issue_key(env.get("DATABASE_URL"), tmp, client="bench", rate_per_min=0))
    procs = {
        s: subprocess.Popen(
            [sys.executable, "-m", "gridflow.run_service", s],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for s in PIPELINE
    }
    try:
        print(
            f"[bench] services starting (vhost {name}, "
            f"{'PostgreSQL' if args.database_url else 'SQLite in ' + str(tmp)}) …",
            flush=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{api}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        conn = pika.BlockingConnection(pika.URLParameters(amqp))
        while True:  # the services declare the queues as they start
            ch = conn.channel()
            try:
                ch.queue_declare(QUEUE, passive=True)
                break
            except pika.exceptions.ChannelClosedByBroker:
                time.sleep(0.3)
        r = requests.post(f"{api}/api/v1/reports", json=body("warm"), headers=auth, timeout=10)
        assert r.status_code == 201, r.text
        next(ch.consume(QUEUE, auto_ack=True, inactivity_timeout=10))

        print(f"[bench] phase 1: {args.count} reports one at a time", flush=True)
        accept, e2e = [], []
        for i in range(args.count):
            t0 = time.perf_counter()
            r = requests.post(f"{api}/api/v1/reports", json=body("seq"), headers=auth,
                              timeout=10)
            t1 = time.perf_counter()
            assert r.status_code == 201, r.text
            method, _, _ = next(ch.consume(QUEUE, auto_ack=True, inactivity_timeout=10))
            assert method is not None, "dispatch did not arrive within 10 s"
            accept.append((t1 - t0) * 1000)
            e2e.append((time.perf_counter() - t0) * 1000)
            if (i + 1) % max(1, args.count // 5) == 0:
                print(f"[bench]   {i + 1}/{args.count}", flush=True)
        ch.cancel()

        print(f"[bench] phase 2: {args.count} reports from {args.clients} clients", flush=True)
        received = 0

        def post(_: int) -> int:
            with requests.Session() as s:
                s.headers.update(auth)
                return s.post(f"{api}/api/v1/reports", json=body("par"), timeout=30).status_code

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            futures = pool.map(post, range(args.count))
            statuses = list(futures)
            posted = time.perf_counter() - t0
            for method, _, _ in ch.consume(QUEUE, auto_ack=True, inactivity_timeout=30):
                if method is None:
                    break
                received += 1
                if received == args.count:
                    break
        elapsed = time.perf_counter() - t0
        conn.close()

        print()
        print(f"one at a time ({args.count} reports)      p50     p95     p99     max")
        for label, xs in (("  HTTP accept (ms)", accept), ("  accept → dispatch (ms)", e2e)):
            print(
                f"{label:<32}{pct(xs, 50):7.1f} {pct(xs, 95):7.1f} {pct(xs, 99):7.1f} "
                f"{max(xs):7.1f}"
            )
        print(f"  mean accept → dispatch          {statistics.mean(e2e):7.1f} ms")
        ok = sum(1 for s in statuses if s == 201)
        print(
            f"{args.clients} concurrent clients: {ok}/{args.count} accepted in {posted:.2f} s "
            f"({ok / posted:.0f} reports/s accepted); {received} dispatches received in "
            f"{elapsed:.2f} s ({received / elapsed:.0f} dispatches/s end to end)"
        )
        return 0 if received == args.count else 1
    finally:
        stop_processes(procs.values())
        vhost(name, create=False, api=args.rabbit_api)


if __name__ == "__main__":
    sys.exit(main())
