"""The chaos run: reports at a steady rate while services are killed, the broker restarts
and poison lands on every queue; then proof, from the departments' side and from the
databases, that nothing was lost and nothing doubled.

Used by ``tests/chaos/run.py`` (the full run, a command) and ``tests/chaos/test_chaos.py``
(the short version in the test suite). The services run as real processes under gridflow's
own supervisor, which restarts what dies, on a throwaway database and a RabbitMQ node of the
run's own (``broker.py``), so that restarting the broker harms nobody else. The parts:
``reporters.py`` (patrol apps), ``departments.py`` (the departments' consumers),
``poison.py``, ``databases.py`` and ``verdict.py``.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import requests
from broker import PrivateBroker, free_port, publish, queue_stats
from databases import Databases
from departments import DepartmentSide
from poison import POISON_KINDS, dead_letter_reason, dead_letters, poison_messages, work_queues
from reporters import Reporters, report_bodies
from verdict import Verdict

from gridflow import PIPELINE
from gridflow.supervisor import Supervisor
from shared.amqp import topology as topo
from shared.config import PROJECT_ROOT
from shared.reference import load_reference
from support import issue_key

CHECK_EVERY_S = 0.5  # how often the supervisor looks for dead services


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Plan:
    """What one chaos run does. ``faults`` is the order of faults, spread evenly over the
    posting: a service name (kill -9 it; the supervisor restarts it), ``broker`` (restart
    RabbitMQ's app) or ``poison`` (poison of every kind on every queue)."""

    reports: int = 10_000
    rate: float = 40.0  # reports per second
    faults: tuple[str, ...] = (
        "poison", "intake", "routing", "broker", "escalation", "notify", "poison",
    )
    database_url: str | None = None  # None: each service its own SQLite file
    workdir: Path = PROJECT_ROOT / "var" / "chaos"
    settle_timeout_s: float = 240.0
    broker_down_s: float = 3.0
    broker_hard_kill: bool = False  # kill -9 RabbitMQ instead of stopping it
    seed: int = 20261123
    clients: int = 8  # concurrent HTTP posters
    progress: Callable[[str], None] = say


class ChaosRun:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.say = plan.progress
        self.ref = load_reference(PROJECT_ROOT / "deploy" / "demo")
        self.run_id = uuid.uuid4().hex[:8]
        self.broker = PrivateBroker()
        self.vhost = "%2F"
        self.amqp_uri = f"amqp://guest:guest@{self.broker.host}/%2F"
        self.dir = plan.workdir / self.run_id
        self.var_dir = self.dir / "var"
        self.http = f"127.0.0.1:{free_port()}"
        self.base_url = f"http://{self.http}"
        self.verdict = Verdict()
        self.poison_ids: dict[str, str] = {}  # message id -> queue
        self.supervisor: Supervisor | None = None
        self._watch_stop = threading.Event()
        self.api_key = ""  # the patrol apps' (admin, no rate limit), issued at the start

    # -- set-up ------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("GRIDFLOW_") and k not in ("AMQP_URI", "DATABASE_URL")}
        env.update({
            "AMQP_URI": self.amqp_uri,
            "GRIDFLOW_VAR_DIR": str(self.var_dir),
            "GRIDFLOW_HTTP_ADDRESS": self.http,
            "GRIDFLOW_PUBLIC_URL": self.base_url,
            "GRIDFLOW_ESCALATION_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
            "GRIDFLOW_ROUTING_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
            "GRIDFLOW_NOTIFY_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
            "GRIDFLOW_LOG_LEVEL": "WARNING",
        })
        if self.plan.database_url:
            env["DATABASE_URL"] = self.plan.database_url
        return env

    def _start(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.say(f"starting a RabbitMQ node of our own ({self.broker.node}, {self.broker.host})")
        self.broker.start()
        # into intake's database before intake starts: an admin key, so that no rate limit
        # (GRIDFLOW_RATE_LIMIT_PER_MIN) slows the posting down
        self.api_key = issue_key(self.plan.database_url, self.var_dir, client="chaos reporters",
                                 rate_per_min=0)
        self.supervisor = Supervisor(list(PIPELINE), self.var_dir, out=_Lines(self.say),
                                     env=self.env())
        self.supervisor.start_all()
        threading.Thread(target=self._watch, daemon=True).start()
        _wait(lambda: _healthy(self.base_url), 60, "intake's health")
        queues = [q for q in work_queues(self.ref)]
        _wait(lambda: set(queues) <= set(queue_stats(self.broker.api, self.vhost)), 60,
              "the topology")

    def _watch(self) -> None:
        while not self._watch_stop.wait(CHECK_EVERY_S):
            assert self.supervisor is not None
            self.supervisor.check()

    # -- faults -----------------------------------------------------------------------------
    def kill(self, service: str) -> None:
        assert self.supervisor is not None
        child = next(c for c in self.supervisor.children if c.name == service)
        assert child.proc is not None
        self.say(f"kill -9 {service} (pid {child.proc.pid})")
        os.kill(child.proc.pid, signal.SIGKILL)
        self.verdict.kills[service] += 1
        if service == "intake":
            _wait(lambda: _healthy(self.base_url), 60, "intake back")

    def restart_broker(self) -> None:
        how = "kill -9" if self.plan.broker_hard_kill else "stop"
        self.say(f"restarting RabbitMQ ({how}, start)")
        down = self.broker.restart(self.plan.broker_down_s, hard=self.plan.broker_hard_kill)
        self.verdict.broker_restarts += 1
        self.verdict.broker_down_s.append(down)
        self.say(f"RabbitMQ back after {down:.1f} s")

    def poison(self, round_no: int) -> None:
        batch = []
        for queue in work_queues(self.ref):
            for exchange, key, body, props, mid in poison_messages(queue, self.ref, round_no):
                batch.append((exchange, key, body, props))
                self.poison_ids[mid] = queue
        for attempt in range(20):
            try:
                publish(self.amqp_uri, batch)
                break
            except pika.exceptions.AMQPError as exc:
                if attempt == 19:
                    raise
                self.say(f"poison not published yet ({type(exc).__name__}); retrying")
                time.sleep(1)
        self.verdict.poison_sent += len(batch)
        self.say(f"poison: {len(batch)} messages on {len(batch) // len(POISON_KINDS)} queues")

    def fault(self, what: str, round_no: int) -> None:
        if what == "broker":
            self.restart_broker()
        elif what == "poison":
            self.poison(round_no)
        elif what in PIPELINE:
            self.kill(what)
        else:
            raise ValueError(f"unknown fault {what!r}")

    # -- the whole run ----------------------------------------------------------------------
    def run(self) -> Verdict:
        p = self.plan
        began = time.monotonic()
        self.say(f"run {self.run_id}: {p.reports:,} reports at {p.rate:g}/s on "
                 f"{'PostgreSQL' if p.database_url else 'SQLite'}; faults: {', '.join(p.faults)}")
        self._start()
        public = [q for q in work_queues(self.ref) if q.startswith("dispatch.")]
        departments = DepartmentSide(self.amqp_uri, public)
        departments.start()
        reporters = Reporters(self.base_url, report_bodies(self.ref, p.reports, self.run_id,
                                                           p.seed), p.rate, p.clients,
                              self.api_key)
        try:
            reporters.start()
            posting_began, duration = time.monotonic(), p.reports / p.rate
            for n, what in enumerate(p.faults, start=1):
                at = posting_began + duration * n / (len(p.faults) + 1)
                self._progress_until(at, reporters, departments)
                self.fault(what, n)
            while any(t.is_alive() for t in reporters._threads):
                self._progress_until(time.monotonic() + 5, reporters, departments)
            reporters.join()
            self.verdict.posting_s = time.monotonic() - posting_began
            self.say(f"posting done: {len(reporters.result.accepted):,} accepted")
            settle_began = time.monotonic()
            self._settle(reporters, departments)
            self.verdict.settled_in_s = time.monotonic() - settle_began
            self._judge(reporters, departments)
        finally:
            departments.stop()
            self._stop()
        self.verdict.seconds = time.monotonic() - began
        return self.verdict

    def _progress_until(self, at: float, reporters: Reporters, departments: DepartmentSide) -> None:
        while (left := at - time.monotonic()) > 0:
            time.sleep(min(left, 10))
            self.say(f"accepted {len(reporters.result.accepted):,}/{len(reporters.bodies):,}"
                         f" · dispatches received {len(departments.received):,}"
                         f" · redelivered {departments.redelivered:,}")

    def _expected(self, dbs: Databases) -> tuple[set[tuple[str, str, str]], int, int]:
        """What should have been dispatched: for every case that is not a duplicate, each of
        its category's departments in its role (from the catalogue, not from any service)."""
        rows = dbs.rows("intake", "SELECT case_id, category, duplicate_of FROM {cases}")
        expected: set[tuple[str, str, str]] = set()
        dups = 0
        for case_id, category, duplicate_of in rows:
            if duplicate_of:
                dups += 1
                continue
            cat = self.ref.catalogue.get(category)
            for dept in cat.departments:
                expected.add((case_id, dept, "lead" if dept == cat.lead else "assist"))
        return expected, len(rows), dups

    def _settle(self, reporters: Reporters, departments: DepartmentSide) -> None:
        """Wait until every outbox is empty, every work queue drained and the dispatches
        stop changing, or the settle timeout."""
        dbs = Databases(self.plan.database_url, self.var_dir)
        deadline = time.monotonic() + self.plan.settle_timeout_s
        stable_since, last = time.monotonic(), -1
        try:
            while time.monotonic() < deadline:
                unsent = sum(dbs.unsent(s) for s in PIPELINE)
                stats = queue_stats(self.broker.api, self.vhost)
                # work queues only: dead letters, unrouted messages and heartbeats (the
                # monitor, which drains them, is not part of the run) stay by design
                backlog = {n: q.get("messages", 0) or 0 for n, q in stats.items()
                           if not n.endswith(".dlq")
                           and n not in (topo.UNROUTED_QUEUE, topo.HEARTBEATS_QUEUE)}
                busy = sum(backlog.values())
                got = len(departments.received)
                if got != last:
                    stable_since, last = time.monotonic(), got
                expected, _, _ = self._expected(dbs)
                assigned = len(departments.assigned())
                if (unsent == 0 and busy == 0 and assigned >= len(expected)
                        and time.monotonic() - stable_since > 3):
                    return
                top = ", ".join(f"{n} {c}" for n, c in sorted(backlog.items(),
                                key=lambda kv: -kv[1])[:3] if c)
                self.say(f"settling: outbox unsent {unsent}, queued {busy}"
                         f"{f' ({top})' if top else ''}, "
                         f"assignments {assigned:,}/{len(expected):,}")
                time.sleep(3)
            self.say("settle timeout: judging what is there")
        finally:
            dbs.dispose()

    def _judge(self, reporters: Reporters, departments: DepartmentSide) -> None:
        v, posting = self.verdict, reporters.result
        dbs = Databases(self.plan.database_url, self.var_dir)
        try:
            v.reports_posted = len(reporters.bodies)
            v.reports_accepted = len(posting.accepted)
            v.reports_rejected = len(posting.rejected)
            v.http_statuses = dict(posting.statuses)
            v.refused_connections = posting.refused_connections
            kept = dict(dbs.rows("intake", "SELECT r.report_id, c.case_id FROM {reports} r "
                                           "JOIN {cases} c ON c.case_id = r.case_id"))
            v.missing_cases = sorted(rid for rid, cid in posting.accepted.items()
                                     if kept.get(rid) != cid)
            expected, v.cases, v.duplicates = self._expected(dbs)
            got = departments.assigned()
            v.dispatches_expected = len(expected)
            v.dispatches_received = sum(len(ids) for ids in got.values())
            v.lost = sorted(expected - set(got))
            v.unexpected = sorted(set(got) - expected)
            v.doubled = sorted(k for k, ids in got.items() if len(ids) > 1)
            v.redelivered = departments.redelivered
            v.other_public = dict(Counter(r.type for r in departments.received
                                          if r.type != "case.assigned"
                                          or r.queue.startswith("dispatch.tier.")))
            v.consumer_reconnects = departments.reconnects
            v.unsent_outbox = {s: dbs.unsent(s) for s in PIPELINE}
        finally:
            dbs.dispose()
        found: dict[str, str] = {}
        for queue in work_queues(self.ref):
            for m in dead_letters(self.broker.api, self.vhost, queue):
                mid = (m.get("properties") or {}).get("message_id", "")
                if mid in self.poison_ids:
                    found[mid] = dead_letter_reason(m)
                else:
                    v.other_dead_letters.append(f"{queue}: {mid} ({dead_letter_reason(m)})")
        v.poison_dead_lettered = len(found)
        v.poison_missing = sorted(set(self.poison_ids) - set(found))
        v.poison_without_reason = sorted(mid for mid, why in found.items() if not why)
        assert self.supervisor is not None
        for child in self.supervisor.children:
            v.unplanned_exits[child.name] = child.exits - v.kills.get(child.name, 0)
            if child.given_up or (child.proc is not None and child.proc.poll() is not None):
                v.crash_looped.append(child.name)

    def _stop(self) -> None:
        self._watch_stop.set()
        if self.supervisor is not None:
            self.supervisor.stop_all()
        self.broker.remove(keep_logs_in=self.var_dir / "log" / "rabbitmq")

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-4000:]}"
                         for f in sorted((self.var_dir / "log").glob("*.log")))


class _Lines(io.TextIOBase):
    """A text stream that hands each line to ``say`` (the supervisor prints to it)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say

    def write(self, s: str) -> int:
        for line in s.splitlines():
            if line.strip():
                self._say(line.removeprefix("[gridflow] "))
        return len(s)


def _healthy(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _wait(fn: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fn():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
