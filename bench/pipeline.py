"""Benchmark: reports/s and latency through all four services, next to the broker's ceiling.

In one run, on one broker:

1. the raw 4-hop pika chains (``bench/raw_chain.py``): a blocking confirm per message, and
   pipelined confirms — what a chain of four persistent hops can do here;
2. the gridflow pipeline (intake → routing → escalation / notify → ``dispatch.<dept>``) as
   four service processes on a fresh vhost and database: the highest sustained rate of
   single reports over HTTP from ``--clients`` concurrent clients, measured from the first
   POST to the last dispatch received by a pika consumer on the department's queue; the
   CPU each process used for it;
3. latency from POST to dispatch received (p50/p95/p99) at 25 %, 50 % and 75 % of that
   rate, the reports sent open-loop at a fixed pace;
4. the bulk intake (``POST /api/v1/reports/bulk``, ``--bulk-size`` reports a request):
   reports/s end to end, and its CPU.

    .venv/bin/python bench/pipeline.py                                   # SQLite
    .venv/bin/python bench/pipeline.py --pg postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "bench"),
                str(Path(__file__).parent)]

from common import pct, pg_database, vhost  # noqa: E402
from raw_chain import run_chain  # noqa: E402
from sampling import Sampler  # noqa: E402

from gridflow import PIPELINE  # noqa: E402
from support import bearer, issue_key, stop_processes  # noqa: E402

QUEUE = "dispatch.civil_affairs"


def say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


def report(tag: str) -> dict[str, Any]:
    """独居老人照护 (E0801) → civil affairs alone; never a duplicate of an open case."""
    return {
        "report_id": f"bench-{tag}-{uuid.uuid4().hex[:12]}",
        "category": "E0801",
        "grid_code": "511802001001101",
        "description": "独居老人需要照护",
        "reporter": {"kind": "grid_worker", "id": "gw-0001"},
    }


# -- processes and their CPU ---------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_of(name: str) -> list[int]:
    """Processes by their exact name (``beam.smp``: RabbitMQ; ``postgres``: its backends)."""
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class CpuMeter:
    """CPU used by named groups of processes between ``start`` and ``stop``."""

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]]) -> None:
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self.before = {g: {p: cpu_seconds(p) for p in pids()} for g, pids in self.groups.items()}
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """CPU seconds per group; a process born meanwhile counts from zero."""
        used = {}
        for g, pids in self.groups.items():
            used[g] = sum(cpu_seconds(p) - self.before[g].get(p, 0.0) for p in pids())
        used["_wall"] = time.perf_counter() - self.t0
        return used


# -- the department's side ------------------------------------------------------------------------
class Dispatches:
    """A pika consumer on the department's queue, in a thread: when each case arrived."""

    def __init__(self, amqp: str) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conn = pika.BlockingConnection(pika.URLParameters(amqp))
        self.ch = self.conn.channel()
        self.ch.basic_qos(prefetch_count=1000)
        self.ch.basic_consume(QUEUE, self._on_message)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_message(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        now = time.perf_counter()
        case_id = json.loads(body)["case_id"]
        with self.lock:
            self.arrived.setdefault(case_id, now)
        ch.basic_ack(method.delivery_tag)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.conn.process_data_events(time_limit=0.05)
        self.conn.close()

    def wait_for(self, case_ids: Iterable[str], timeout: float = 120) -> float:
        """The arrival of the last of ``case_ids``; raises when one does not come."""
        wanted = set(case_ids)
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                missing = wanted - self.arrived.keys()
                if not missing:
                    return max(self.arrived[c] for c in wanted)
            time.sleep(0.02)
        raise RuntimeError(f"{len(missing)} of {len(wanted)} dispatches did not arrive")

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)


# -- load ---------------------------------------------------------------------------------------
class Client:
    def __init__(self, api: str, auth: dict[str, str], clients: int) -> None:
        self.api, self.auth = api, auth
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(clients)

    def session(self) -> requests.Session:
        s = getattr(self.local, "s", None)
        if s is None:
            s = self.local.s = requests.Session()
            s.headers.update(self.auth)
        return s

    def post(self, tag: str) -> tuple[str, float, float]:
        """One report: its case id, when it was sent, when intake answered."""
        t0 = time.perf_counter()
        r = self.session().post(f"{self.api}/api/v1/reports", json=report(tag), timeout=60)
        t1 = time.perf_counter()
        if r.status_code != 201:
            raise RuntimeError(f"report refused: {r.status_code} {r.text[:200]}")
        return r.json()["case_id"], t0, t1

    def post_bulk(self, tag: str, size: int) -> tuple[list[str], float]:
        t0 = time.perf_counter()
        r = self.session().post(f"{self.api}/api/v1/reports/bulk",
                                json={"reports": [report(tag) for _ in range(size)]}, timeout=120)
        if r.status_code != 200 or r.json()["created"] != size:
            raise RuntimeError(f"bulk refused: {r.status_code} {r.text[:300]}")
        return [x["case_id"] for x in r.json()["results"]], t0


def max_rate(client: Client, sink: Dispatches, count: int) -> tuple[float, float]:
    """Reports/s from the first POST to the last dispatch, every client as fast as it
    goes; and the mean HTTP answer time."""
    t0 = time.perf_counter()
    results = list(client.pool.map(lambda _: client.post("max"), range(count)))
    last = sink.wait_for(c for c, _, _ in results)
    answer = sum(t1 - ts for _, ts, t1 in results) / len(results)
    return count / (last - t0), answer


def paced(client: Client, sink: Dispatches, rate: float, seconds: float) -> dict[str, float]:
    """Reports sent open-loop at ``rate``/s for ``seconds``: latency from the moment each
    was due to be sent (a late send counts against us) to its dispatch."""
    n = max(20, int(rate * seconds))
    start = time.perf_counter() + 0.2
    due = [start + i / rate for i in range(n)]

    def one(i: int) -> tuple[str, float]:
        delay = due[i] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        case_id, _, _ = client.post("paced")
        return case_id, due[i]

    sent = list(client.pool.map(one, range(n)))
    sink.wait_for(c for c, _ in sent)
    with sink.lock:
        lat = [(sink.arrived[c] - t) * 1000 for c, t in sent]
    return {"rate": rate, "n": n, "p50": pct(lat, 50), "p95": pct(lat, 95),
            "p99": pct(lat, 99), "max": max(lat)}


def bulk_rate(client: Client, sink: Dispatches, count: int, size: int) -> float:
    t0 = time.perf_counter()
    batches = list(client.pool.map(lambda _: client.post_bulk("bulk", size),
                                   range(max(1, count // size))))
    last = sink.wait_for(c for ids, _ in batches for c in ids)
    return sum(len(ids) for ids, _ in batches) / (last - t0)


# -- the run ------------------------------------------------------------------------------------
def start_pipeline(amqp: str, tmp: Path, port: int, database_url: str | None,
                   ) -> tuple[dict[str, subprocess.Popen], str, dict[str, str]]:
    api = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AMQP_URI": amqp,
        "GRIDFLOW_VAR_DIR": str(tmp),
        "GRIDFLOW_HTTP_ADDRESS": f"127.0.0.1:{port}",
        "GRIDFLOW_LOG_LEVEL": "WARNING",
        **{f"GRIDFLOW_{s.upper()}_HTTP_ADDRESS": "127.0.0.1:0"
           for s in ("routing", "escalation", "notify")},
    }
    if database_url:
        env["DATABASE_URL"] = database_url
    # an admin key without a rate limit (the default 600/min would throttle the run)
    auth = bearer(issue_key(database_url, tmp, client="bench", rate_per_min=0))
    procs = {
        s: subprocess.Popen([sys.executable, "-m", "gridflow.run_service", s], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for s in PIPELINE
    }
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{api}/health", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("intake did not start")
        time.sleep(0.3)
    conn = pika.BlockingConnection(pika.URLParameters(amqp))
    while time.monotonic() < deadline:  # the services declare the queues as they start
        try:
            conn.channel().queue_declare(QUEUE, passive=True)
            break
        except pika.exceptions.ChannelClosedByBroker:
            time.sleep(0.3)
    conn.close()
    return procs, api, auth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_line(used: dict[str, float], reports: int) -> str:
    wall = used["_wall"]
    parts = [f"{g} {100 * s / wall:.0f}% ({1000 * s / reports:.2f} ms/report)"
             for g, s in used.items() if g != "_wall" and s > 0]
    total = sum(s for g, s in used.items() if g != "_wall")
    return "; ".join(parts) + f"; all {100 * total / wall:.0f}% of {100 * (os.cpu_count() or 1)}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--count", type=int, default=1500,
                    help="single reports for the maximum rate (default 1,500)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (8)")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="length of each paced phase (default 10 s)")
    ap.add_argument("--bulk-size", type=int, default=100, help="reports per bulk request (100)")
    ap.add_argument("--bulk-count", type=int, default=3000, help="reports sent in bulk (3,000)")
    ap.add_argument("--raw-count", type=int, default=5000,
                    help="messages through each raw chain (default 5,000)")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw pika chains")
    ap.add_argument("--pg", metavar="ADMIN_URL",
                    help="PostgreSQL (a fresh database is made); default SQLite in a temp dir")
    ap.add_argument("--port", type=int, default=0, help="intake's port (default: a free one)")
    ap.add_argument("--profile", action="store_true",
                    help="sample the services with py-spy during the maximum-rate phase and "
                         "say where their time goes")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()

    name = f"bench_{uuid.uuid4().hex[:8]}"
    vhost(name, create=True)
    amqp = f"amqp://guest:guest@127.0.0.1:5672/{name}"
    tmp = Path(tempfile.mkdtemp(prefix="gridflow-bench-"))
    db_url = pg_database(args.pg, name, create=True) if args.pg else None
    figures: dict[str, Any] = {"database": "PostgreSQL" if db_url else "SQLite",
                               "cores": os.cpu_count()}
    procs: dict[str, subprocess.Popen] = {}
    sink = None
    try:
        if not args.no_raw:
            for mode in ("blocking", "pipelined"):
                say(f"raw 4-hop pika chain, {mode} confirms, {args.raw_count:,} messages …")
                figures[f"raw_{mode}"] = r = run_chain(amqp, mode, args.raw_count)
                say(f"  {r['per_s']:,.0f} messages/s")
        say(f"starting the four services ({figures['database']}) …")
        procs, api, auth = start_pipeline(amqp, tmp, args.port or free_port(), db_url)
        sink = Dispatches(amqp)
        client = Client(api, auth, args.clients)
        meter = CpuMeter({
            **{s: (lambda p=p: [p.pid]) for s, p in procs.items()},
            "rabbitmq": lambda: pids_of("beam.smp"),
            **({"postgres": lambda: pids_of("postgres")} if db_url else {}),
            "bench": lambda: [os.getpid()],
        })
        say("warming up …")
        sink.wait_for([client.post("warm")[0] for _ in range(20)])

        say(f"maximum rate: {args.count:,} single reports from {args.clients} clients …")
        sampler = Sampler({s: p.pid for s, p in procs.items()})
        if args.profile:
            if not sampler.available:
                say("  py-spy is not installed: no profile (pip install py-spy)")
            sampler.start()
        meter.start()
        rate, answer = max_rate(client, sink, args.count)
        used = meter.stop()
        if args.profile:
            figures["profile"] = sampler.result()
        figures["max_rate"] = rate
        figures["max_answer_ms"] = answer * 1000
        figures["cpu_single"] = {g: s / args.count * 1000 for g, s in used.items() if g != "_wall"}
        say(f"  {rate:,.0f} reports/s; CPU: {cpu_line(used, args.count)}")

        figures["paced"] = []
        for share in (0.25, 0.5, 0.75):
            say(f"latency at {share:.0%} of the maximum ({share * rate:,.0f}/s for "
                f"{args.seconds:g} s) …")
            figures["paced"].append(p := paced(client, sink, share * rate, args.seconds))
            say(f"  p50 {p['p50']:.1f} ms, p95 {p['p95']:.1f} ms, p99 {p['p99']:.1f} ms")

        say(f"bulk: {args.bulk_count:,} reports in requests of {args.bulk_size} …")
        meter.start()
        brate = bulk_rate(client, sink, args.bulk_count, args.bulk_size)
        used = meter.stop()
        figures["bulk_rate"] = brate
        figures["cpu_bulk"] = {g: s / args.bulk_count * 1000
                               for g, s in used.items() if g != "_wall"}
        say(f"  {brate:,.0f} reports/s; CPU: {cpu_line(used, args.bulk_count)}")
    finally:
        if sink is not None:
            sink.close()
        stop_processes(procs.values())
        vhost(name, create=False)
        if db_url:
            pg_database(args.pg, name, create=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print_summary(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def print_summary(f: dict[str, Any]) -> None:
    print()
    print(f"gridflow pipeline, {f['database']}, {f['cores']} cores")
    if "raw_blocking" in f:
        rb, rp = f["raw_blocking"]["per_s"], f["raw_pipelined"]["per_s"]
        print(f"  raw 4-hop chain, blocking confirms     {rb:8,.0f} messages/s")
        print(f"  raw 4-hop chain, pipelined confirms    {rp:8,.0f} messages/s")
    for label, key in (("single reports over HTTP", "max_rate"), ("bulk intake", "bulk_rate")):
        line = f"  pipeline, {label:<28} {f[key]:8,.0f} reports/s"
        if "raw_blocking" in f:
            line += f"   = {f[key] / rb:.2f}× blocking, {100 * f[key] / rp:.0f} % of pipelined"
        print(line)
    print("  POST → dispatch received      rate      p50      p95      p99      max")
    for p in f["paced"]:
        print(f"    {p['rate'] / f['max_rate']:4.0%} of max          {p['rate']:6.0f}/s "
              f"{p['p50']:6.1f} ms {p['p95']:6.1f} ms {p['p99']:6.1f} ms {p['max']:6.1f} ms")
    for key, label in (("cpu_single", "single"), ("cpu_bulk", "bulk")):
        cpu = ", ".join(f"{g} {ms:.2f}" for g, ms in f[key].items())
        print(f"  CPU ms per report ({label}): {cpu}")
    for service, shares in f.get("profile", {}).items():
        where = ", ".join(f"{k} {v:.0f} %" for k, v in shares.items())
        print(f"  where {service}'s time goes (single reports): {where}")


if __name__ == "__main__":
    sys.exit(main())
