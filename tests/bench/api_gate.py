"""Benchmark: what the API-key gate costs a request.

Starts intake as a process on a fresh RabbitMQ vhost and SQLite files in a temporary folder
(or PostgreSQL with ``--database-url``: a database of its own, it leaves its ``intake``
schema there), once with the key cache on (``GRIDFLOW_KEY_CACHE_S``
10, the default) and once with it off (0: a database lookup per request), and times
``--count`` sequential ``GET /api/v1/categories`` with an admin key, and as many public
``GET /health`` (no key, no gate) for comparison. Prints percentiles and requests/s.

    .venv/bin/python tests/bench/api_gate.py --count 2000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from common import pct, vhost  # noqa: E402

from support import bearer, issue_key, stop_processes, wait_for  # noqa: E402


def timed(session: requests.Session, url: str, count: int, headers: dict[str, str]) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        r = session.get(url, headers=headers, timeout=10)
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise SystemExit(f"{url}: {r.status_code} {r.text[:200]}")
    return out


def up(session: requests.Session, base: str) -> bool:
    try:
        return session.get(f"{base}/health", timeout=1).ok
    except requests.RequestException:
        return False


def line(what: str, times: list[float]) -> str:
    return (f"  {what:<34} p50 {pct(times, 50) * 1000:6.2f} ms  p95 {pct(times, 95) * 1000:6.2f}"
            f" ms  p99 {pct(times, 99) * 1000:6.2f} ms  {len(times) / sum(times):7.0f} req/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="requests per measurement")
    ap.add_argument("--port", type=int, default=8056, help="intake port for the run")
    ap.add_argument("--database-url", help="PostgreSQL URL (default: SQLite in a temp dir)")
    ap.add_argument("--rabbit-api", default="http://127.0.0.1:15672")
    args = ap.parse_args()

    name = f"bench_{uuid.uuid4().hex[:8]}"
    vhost(name, create=True, api=args.rabbit_api)
    tmp = Path(tempfile.mkdtemp(prefix="gridflow-bench-"))
    base = f"http://127.0.0.1:{args.port}"
    token = issue_key(args.database_url, tmp, "admin", client="bench", rate_per_min=0)
    print(f"api gate: {args.count} sequential requests per line, intake on "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}")
    try:
        for cache_s in ("10", "0"):
            env = {**os.environ, "AMQP_URI": f"amqp://guest:guest@127.0.0.1:5672/{name}",
                   "GRIDFLOW_VAR_DIR": str(tmp), "GRIDFLOW_HTTP_ADDRESS": f"127.0.0.1:{args.port}",
                   "GRIDFLOW_LOG_LEVEL": "WARNING", "GRIDFLOW_KEY_CACHE_S": cache_s,
                   **({"DATABASE_URL": args.database_url} if args.database_url else {})}
            proc = subprocess.Popen([sys.executable, "-m", "gridflow.run_service", "intake"],
                                    cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                with requests.Session() as s:
                    wait_for(lambda: up(s, base), timeout=60, what="intake")
                    timed(s, f"{base}/api/v1/categories", 50, bearer(token))  # warm up
                    if cache_s == "10":
                        print(line("GET /health (public, no gate)",
                                   timed(s, f"{base}/health", args.count, {})))
                        print(line("GET /api/v1/grids?depth=0 (key)",
                                   timed(s, f"{base}/api/v1/grids?depth=0", args.count,
                                         bearer(token))))
                        print(line("GET /api/v1/openapi.json (public)",
                                   timed(s, f"{base}/api/v1/openapi.json", args.count // 4, {})))
                    print(line(f"GET /api/v1/categories, cache {cache_s} s",
                               timed(s, f"{base}/api/v1/categories", args.count, bearer(token))))
            finally:
                stop_processes([proc])
    finally:
        vhost(name, create=False, api=args.rabbit_api)
    return 0


if __name__ == "__main__":
    sys.exit(main())
