"""``gridflow up``: run every service as its own process, restart what dies, stop cleanly.

Each service's structured log goes to ``var/log/<service>.log``; the console gets a short
account of what is happening and where to look.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gridflow import SERVICES

CRASH_WINDOW_S = 60.0
CRASH_LIMIT = 5


@dataclass
class Child:
    name: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None
    started_at: float = 0.0
    crashes: deque[float] = field(default_factory=deque)
    exits: int = 0  # every exit the supervisor restarted, however long ago
    given_up: bool = False


class Supervisor:
    def __init__(
        self,
        services: list[str],
        var_dir: Path,
        out: TextIO = sys.stdout,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: the children's environment (default: this process's)."""
        self.children = [Child(s, var_dir / "log" / f"{s}.log") for s in services]
        self.out = out
        self.env = env
        self._stopping = False
        (var_dir / "log").mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        print(f"[gridflow] {text}", file=self.out, flush=True)

    def start(self, child: Child) -> None:
        child.log = child.log or child.log_path.open("ab")
        base = os.environ if self.env is None else self.env
        env = {**base, "GRIDFLOW_SERVICE": child.name, "PYTHONUNBUFFERED": "1"}
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "gridflow.run_service", child.name],
            stdout=child.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        child.started_at = time.monotonic()

    def start_all(self) -> None:
        for child in self.children:
            self.start(child)
            self.say(f"started {child.name:<10} pid {child.proc.pid:<7} log {child.log_path}")

    def check(self) -> None:
        """Restart children that exited; give up on one that crash-loops."""
        if self._stopping:
            return
        now = time.monotonic()
        for child in self.children:
            if child.given_up or child.proc is None or child.proc.poll() is None:
                continue
            code = child.proc.returncode
            child.exits += 1
            child.crashes.append(now)
            while child.crashes and now - child.crashes[0] > CRASH_WINDOW_S:
                child.crashes.popleft()
            if len(child.crashes) >= CRASH_LIMIT:
                child.given_up = True
                self.say(
                    f"{child.name} exited {CRASH_LIMIT} times within {CRASH_WINDOW_S:.0f}s "
                    f"(last code {code}); not restarting it. See {child.log_path}"
                )
                continue
            self.say(f"{child.name} exited with code {code}; restarting (see {child.log_path})")
            self.start(child)

    def stop_all(self, timeout: float = 15.0) -> None:
        self._stopping = True
        for child in self.children:
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {timeout:.0f}s; killing it")
                child.proc.kill()
                child.proc.wait()
            if child.log:
                child.log.close()
        self.say("all services stopped")

    def run_forever(self) -> int:
        """Restart what dies until SIGTERM or Ctrl-C (see ``stop_on_signal``), then stop."""
        try:
            while True:
                time.sleep(1.0)
                self.check()
        except KeyboardInterrupt:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the
            signal.signal(sig, signal.SIG_IGN)  # clean stop short (it kills after 15 s)
        self.say("stopping …")
        self.stop_all()


def stop_on_signal() -> None:
    """SIGTERM behaves like Ctrl-C: it raises KeyboardInterrupt wherever the supervisor is,
    starting or running, so that the services never outlive it."""

    def _term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)


def wait_http(url: str, timeout: float, say: Any) -> bool:
    deadline = time.monotonic() + timeout
    shown = False
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        if not shown:
            say(f"waiting for {url} …")
            shown = True
        time.sleep(0.5)
    return False


def banner(http: str, amqp_uri: str, var_dir: Path, departments: list[str]) -> str:
    from shared.config import http_address

    base = f"http://{http}"
    example = (
        f"curl -s -X POST {base}/api/v1/reports -H 'content-type: application/json' -d "
        '\'{"report_id": "demo-1", "category": "E0402", "grid_code": "511802001001101", '
        '"description": "消防通道被车辆堵塞", "reporter": {"kind": "grid_worker", '
        '"id": "gw-0001"}}\''
    )
    return "\n".join(
        [
            "",
            "gridflow is up — demo district 雨城区 (deploy/demo/)",
            f"  intake API      {base}/api/v1/  (health: {base}/health)",
            f"  categories      {base}/api/v1/categories",
            f"  grid tree       {base}/api/v1/grids?depth=2",
            f"  cases           {base}/api/v1/cases",
            f"  ledger (督办)    {base}/api/v1/supervision  (CSV: {base}/api/v1/supervision.csv)",
            f"  escalation      http://{http_address('escalation')}/health  (clock auditor)",
            "  RabbitMQ UI     http://127.0.0.1:15672/  (guest / guest)",
            f"  broker          {amqp_uri.split('@')[-1]}",
            f"  logs            {var_dir / 'log'}/<service>.log",
            "",
            "Try it (in another terminal):",
            "  .venv/bin/gridflow subscribe --department fire",
            "  .venv/bin/gridflow subscribe --tier community     # what 社区 is told",
            f"  {example}",
            "",
            f"Departments: {', '.join(departments)}",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def main(args: Any) -> int:
    from shared.config import Settings
    from shared.reference import load_reference

    settings = Settings.from_config({})
    ref = load_reference(settings.data_dir)
    sup = Supervisor(args.services or list(SERVICES), settings.var_dir)
    sup.say(
        f"demo data: {len(ref.grid)} grid nodes, {len(ref.catalogue.categories)} categories, "
        f"{len(ref.catalogue.departments)} departments ({settings.data_dir})"
    )
    stop_on_signal()
    try:
        sup.start_all()
        http = os.environ.get("GRIDFLOW_HTTP_ADDRESS", "127.0.0.1:8000")
        intake_runs = "intake" in [c.name for c in sup.children]
        if intake_runs and not wait_http(f"http://{http}/health", 60, sup.say):
            sup.say("intake did not answer within 60 s; see var/log/intake.log")
            sup.stop_all()
            return 1
        sup.say(banner(http, settings.amqp_uri, settings.var_dir,
                       sorted(ref.catalogue.departments)))
    except KeyboardInterrupt:  # stopped while starting
        sup.shutdown()
        return 0
    return sup.run_forever()
