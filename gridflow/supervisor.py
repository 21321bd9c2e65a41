"""``gridflow up``: run every service as its own process, restart what dies, stop cleanly.

Each service's structured log goes to ``var/log/<service>.log``; the console gets a short
account of what is happening and where to look. By default the services run on a demo
clock (``--speed 60``: a demo day in 24 minutes, from 08:30 of a working day) and, once
intake answers, a simulated district (``gridflow simulate``) is started as one more
supervised child, its log in ``var/log/simulator.log``. Each service connects to RabbitMQ as
its own broker user, provisioned at start (``gridflow broker-users``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gridflow import SERVICES
from shared.clock import CLOCK_VARS, ScaledClock, working_morning

CRASH_WINDOW_S = 60.0
CRASH_LIMIT = 5


DEFAULT_SPEED = 60.0  # a demo day in 24 minutes
DEFAULT_RATE = 10.0  # the simulator's reports per real minute
AUDIT_MARGIN_S = 60.0  # escalation's default, in real seconds
CLOCK_FILE = "demo-clock.json"  # how far the last run's demo time got


@dataclass
class Child:
    """A supervised process: a service (``python -m gridflow.run_service <name>``) unless
    ``command`` says otherwise (the simulator)."""

    name: str
    log_path: Path
    command: list[str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None
    started_at: float = 0.0
    crashes: deque[float] = field(default_factory=deque)
    exits: int = 0  # every exit the supervisor restarted, however long ago
    given_up: bool = False
    env: dict[str, str] = field(default_factory=dict)  # over the supervisor's (its AMQP_URI)

    @property
    def is_service(self) -> bool:
        return self.command is None

    def argv(self) -> list[str]:
        if self.command is not None:
            return list(self.command)
        return [sys.executable, "-m", "gridflow.run_service", self.name]


class Supervisor:
    def __init__(
        self,
        services: list[str],
        var_dir: Path,
        out: TextIO = sys.stdout,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: the children's environment (default: this process's)."""
        self.var_dir = var_dir
        self.children = [Child(s, var_dir / "log" / f"{s}.log") for s in services]
        self.out = out
        self.env = env
        # called each second with False, and with True when stopping
        self.on_tick: Callable[[bool], None] | None = None
        self._stopping = False
        (var_dir / "log").mkdir(parents=True, exist_ok=True)

    def add(self, name: str, command: list[str]) -> Child:
        """One more child running ``command`` (not a service), supervised alike."""
        child = Child(name, self.var_dir / "log" / f"{name}.log", command=command)
        self.children.append(child)
        return child

    def say(self, text: str) -> None:
        print(f"[gridflow] {text}", file=self.out, flush=True)

    def start(self, child: Child) -> None:
        child.log = child.log or child.log_path.open("ab")
        base = os.environ if self.env is None else self.env
        env = {**base, **child.env, "GRIDFLOW_SERVICE": child.name, "PYTHONUNBUFFERED": "1"}
        child.proc = subprocess.Popen(
            child.argv(),
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
        """SIGTERM every child, the others (the simulator) first so that they do not call
        services that are stopping; kill what has not stopped within ``timeout``."""
        self._stopping = True
        others = [c for c in self.children if not c.is_service]
        services = [c for c in self.children if c.is_service]
        self._stop(others, min(timeout, 10.0))
        self._stop(services, timeout)
        self.say("all services stopped")

    def _stop(self, children: list[Child], timeout: float) -> None:
        for child in children:
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
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

    def run_forever(self) -> int:
        """Restart what dies until SIGTERM or Ctrl-C (see ``stop_on_signal``), then stop."""
        try:
            while True:
                time.sleep(1.0)
                self.check()
                self._tick(final=False)
        except KeyboardInterrupt:
            self.shutdown()
        return 0

    def _tick(self, final: bool) -> None:
        if self.on_tick is not None:
            with contextlib.suppress(OSError):
                self.on_tick(final)

    def shutdown(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the
            signal.signal(sig, signal.SIG_IGN)  # clean stop short (it kills after 15 s)
        self.say("stopping …")
        self._tick(final=True)
        self.stop_all()


def stop_on_signal() -> None:
    """SIGTERM behaves like Ctrl-C: it raises KeyboardInterrupt wherever the supervisor is,
    starting or running, so that the services never outlive it. The first signal also
    ignores the ones after it, at once: a second signal arriving before ``shutdown`` ran
    would otherwise interrupt the clean stop itself (seen in CI: two quick SIGTERMs)."""

    def _term(*_: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)


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


@dataclass(frozen=True)
class Demo:
    """What ``gridflow up`` adds to the services: the demo clock and the simulator."""

    clock: ScaledClock | None = None  # None: real time
    simulator_rate: float | None = None  # None: no simulator
    monitor: bool = False  # the monitor service is among the children
    tz: Any = None  # the calendar's time zone (default Asia/Shanghai)


def banner(http: str, amqp_uri: str, var_dir: Path, departments: list[str],
           demo: Demo | None = None, users: Any = None, keys: list[Any] | None = None) -> str:
    """``users``: the broker users provisioned (``broker_users.Credentials``), if any;
    ``keys``: the demo's API keys (``demo_keys.DemoKey``)."""
    from gridflow.demo_keys import banner_lines
    from shared.config import http_address

    demo = demo or Demo()
    base = f"http://{http}"
    patrol = next((k.token for k in keys or [] if k.role == "patrol_app"), "<patrol app key>")
    example = (
        f"curl -s -X POST {base}/api/v1/reports -H 'Authorization: Bearer {patrol}' "
        "-H 'content-type: application/json' -d "
        '\'{"report_id": "demo-1", "category": "E0402", "grid_code": "511802001001101", '
        '"description": "消防通道被车辆堵塞", "reporter": {"kind": "grid_worker", '
        '"id": "gw-0001"}}\''
    )
    monitor = (f"  monitor         http://{http_address('monitor')}/  (operators' page; user "
               'operator, password from GRIDFLOW_MONITOR_PASSWORD, default "gridflow")'
               + ("" if demo.monitor else " — not started"))
    return "\n".join(
        [
            "",
            "gridflow is up — demo district 雨城区 (deploy/demo/)",
            monitor,
            f"  intake API      {base}/api/v1/  (health: {base}/health)",
            f"  categories      {base}/api/v1/categories",
            f"  grid tree       {base}/api/v1/grids?depth=2",
            f"  cases           {base}/api/v1/cases",
            f"  ledger (督办)    {base}/api/v1/supervision  (CSV: {base}/api/v1/supervision.csv)",
            f"  escalation      http://{http_address('escalation')}/health  (clock auditor)",
            "  RabbitMQ UI     http://127.0.0.1:15672/  (guest / guest)",
            f"  broker          {amqp_uri.split('@')[-1]}",
            f"  logs            {var_dir / 'log'}/<service>.log",
            *_user_lines(users, amqp_uri, departments),
            *_demo_lines(demo, var_dir),
            *banner_lines(keys or [], var_dir),
            "",
            "Try it (in another terminal):",
            "  .venv/bin/gridflow subscribe --department fire",
            "  .venv/bin/gridflow subscribe --tier community     # what 社区 is told",
            f"  {example}",
            *(["  (your subscriber gets its queue's messages before the simulator does: "
               "consumer priority)"] if demo.simulator_rate is not None else []),
            "",
            f"Departments: {', '.join(departments)}",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def _user_lines(users: Any, amqp_uri: str, departments: list[str]) -> list[str]:
    if users is None:
        return ["  broker users    not provisioned: the services use AMQP_URI as given"]
    from gridflow.broker_users import amqp_uri_for
    from shared.amqp.permissions import department_user

    dept = "fire" if "fire" in departments else (departments or ["<code>"])[0]
    name = department_user(dept, users.prefix)
    example = amqp_uri_for(amqp_uri, name, "PASSWORD", users.vhost)
    return [
        f"  broker users    every service runs as its own ({users.prefix}gridflow-<service>); "
        "a department's user",
        f"                  ({users.prefix}dept.<code>) reads only dispatch.<code> and answers "
        "only as itself",
        f"                  passwords in {users.secrets_path} (gridflow broker-users "
        "--show-passwords)",
        f"                  gridflow subscribe --department {dept} --amqp-uri {example}",
    ]


def _demo_lines(demo: Demo, var_dir: Path) -> list[str]:
    from zoneinfo import ZoneInfo

    lines = []
    if demo.clock is not None:
        c = demo.clock
        tz = demo.tz or ZoneInfo("Asia/Shanghai")
        local = c.start.astimezone(tz)
        lines += [
            f"  demo time       speed {c.speed:g}: a demo day in {_real_span(86400 / c.speed)}, "
            f"from {local:%a %Y-%m-%d %H:%M} ({tz})",
            f"                  a 30-minute report-in deadline passes in "
            f"{_real_span(1800 / c.speed)}; --speed 1 for real time",
        ]
    else:
        lines.append("  demo time       off: real time (--speed 60 for a demo day in 24 minutes)")
    if demo.simulator_rate is not None:
        lines += [
            f"  simulator       {demo.simulator_rate:g} reports a real minute; departments, grid "
            f"workers, reporters answer (log {var_dir / 'log' / 'simulator.log'})",
            "                  for a quiet walkthrough: gridflow up --no-simulator",
        ]
    else:
        lines.append("  simulator       off (gridflow simulate --help to run one by hand)")
    return lines


def _real_span(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 90:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.3g} seconds"


# -- the demo clock ------------------------------------------------------------------------------
def demo_clock(calendar: Any, var_dir: Path, speed: float,
               now: datetime | None = None) -> ScaledClock:
    """Demo time for a run: from 08:30 of today (or the next working day), or of the working
    day after the demo time a previous run on this ``var_dir`` reached; real epoch now."""
    now = now or datetime.now(UTC)
    start = working_morning(calendar, now, not_before=last_demo_time(var_dir))
    return ScaledClock(start, now, speed)


def last_demo_time(var_dir: Path) -> datetime | None:
    """How far the demo clock of the last run on ``var_dir`` got (None if unknown)."""
    try:
        data = json.loads((var_dir / CLOCK_FILE).read_text())
        at = datetime.fromisoformat(data["demo_now"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return at if at.tzinfo is not None else None


def save_demo_time(var_dir: Path, clock: ScaledClock) -> None:
    path = var_dir / CLOCK_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"demo_now": clock.now().isoformat(), **clock.env()}))
    tmp.replace(path)


def clock_env(base: dict[str, str], clock: ScaledClock | None) -> dict[str, str]:
    """The children's environment: the demo clock's three variables (and escalation's
    auditor margin, which counts demo seconds, scaled so that it stays a real minute), or
    none of them for real time."""
    env = {k: v for k, v in base.items() if clock is not None or k not in CLOCK_VARS}
    if clock is not None:
        env.update(clock.env())
        env.setdefault("GRIDFLOW_AUDIT_MARGIN_S", f"{AUDIT_MARGIN_S * clock.speed:g}")
    return env


def simulator_command(http: str, amqp_uri: str, rate: float, speed: float) -> list[str]:
    return [sys.executable, "-m", "gridflow.simulator", "--intake", f"http://{http}",
            "--amqp-uri", amqp_uri, "--rate", f"{rate:g}", "--speed", f"{speed:g}"]


def broker_users_for(settings: Any, departments: list[str], say: Callable[[str], None]) -> Any:
    """Provision a broker user per service and per department (``gridflow broker-users``)
    in AMQP_URI's vhost; ``None`` when an external broker does not let us (the services
    then use AMQP_URI as given). Raises ``ProvisionError`` for the local broker."""
    from gridflow import broker_users as bu

    try:
        users = bu.provision(bu.default_admin_url(settings.amqp_uri),
                             bu.vhost_of(settings.amqp_uri), departments, SERVICES,
                             bu.default_secrets_path(settings.var_dir))
    except bu.ProvisionError as exc:
        if not bu.is_external(settings.amqp_uri):
            raise
        say(f"broker users not provisioned on the external broker: {exc}")
        say("the services use AMQP_URI as given")
        return None
    say(f"broker users: {len(users.grants)} in vhost {users.vhost!r} "
        f"({len(users.created)} new), passwords in {users.secrets_path}")
    return users


def main(args: Any) -> int:
    from gridflow.broker_users import ProvisionError
    from shared.config import Settings
    from shared.reference import load_reference

    settings = Settings.from_config({})
    ref = load_reference(settings.data_dir)
    speed = float(getattr(args, "speed", None) or DEFAULT_SPEED)
    rate = float(getattr(args, "rate", None) or DEFAULT_RATE)
    simulate = not getattr(args, "no_simulator", False)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    clock = demo_clock(ref.calendar, settings.var_dir, speed) if speed != 1 else None
    from gridflow import demo_keys as dk

    env = clock_env(dict(os.environ), clock)
    env["GRIDFLOW_METRICS_TOKEN"] = dk.metrics_token(settings.var_dir,
                                                     os.environ.get("GRIDFLOW_METRICS_TOKEN"))
    sup = Supervisor(args.services or list(SERVICES), settings.var_dir, env=env)
    if clock is not None:
        last_saved = [0.0]

        def save(final: bool) -> None:
            if final or time.monotonic() - last_saved[0] >= 10:
                save_demo_time(settings.var_dir, clock)
                last_saved[0] = time.monotonic()

        sup.on_tick = save
        save_demo_time(settings.var_dir, clock)
    sup.say(
        f"demo data: {len(ref.grid)} grid nodes, {len(ref.catalogue.categories)} categories, "
        f"{len(ref.catalogue.departments)} departments ({settings.data_dir})"
    )
    try:
        users = broker_users_for(settings, sorted(ref.catalogue.departments), sup.say)
    except ProvisionError as exc:
        sup.say(f"cannot provision the broker users: {exc}")
        return 1
    try:
        keys = dk.ensure(settings.var_dir, settings.database_url, ref.grid,
                         sorted(ref.catalogue.departments))
    except Exception as exc:  # intake's database: a file, or PostgreSQL not answering
        sup.say(f"cannot make the demo's API keys in intake's database: {exc}")
        return 1
    sup.say(f"demo API keys: {', '.join(k.role for k in keys)} ({settings.var_dir / dk.KEYS_FILE})")
    if users is not None:
        for child in sup.children:  # each service connects as its own broker user
            child.env["AMQP_URI"] = users.service_uri(settings.amqp_uri, child.name)
    if clock is not None:
        sup.say(f"demo clock: speed {speed:g}, demo time starts at {clock.start.isoformat()}")
    stop_on_signal()
    try:
        sup.start_all()
        http = os.environ.get("GRIDFLOW_HTTP_ADDRESS", "127.0.0.1:8000")
        names = [c.name for c in sup.children]
        intake_runs = "intake" in names
        if intake_runs and not wait_http(f"http://{http}/health", 60, sup.say):
            sup.say("intake did not answer within 60 s; see var/log/intake.log")
            sup.stop_all()
            return 1
        if simulate and intake_runs:
            # The simulator plays every department and grid tier at once (a test tool): it
            # keeps AMQP_URI's user, not a department's.
            child = sup.add("simulator", simulator_command(http, settings.amqp_uri, rate, speed))
            child.env["GRIDFLOW_API_KEY"] = keys[0].token  # admin: it plays every role
            sup.start(child)
            assert child.proc is not None
            sup.say(f"started {child.name:<10} pid {child.proc.pid:<7} log {child.log_path}")
        elif simulate:
            sup.say("no simulator: it needs intake (--services … intake)")
        sup.say(banner(http, settings.amqp_uri, settings.var_dir,
                       sorted(ref.catalogue.departments),
                       Demo(clock=clock, simulator_rate=rate if simulate and intake_runs else None,
                            monitor="monitor" in names, tz=ref.calendar.tz), users=users,
                       keys=keys))
    except KeyboardInterrupt:  # stopped while starting
        sup.shutdown()
        return 0
    return sup.run_forever()
