"""``gridflow simulate``: a district's day played against a running gridflow.

Reporters (grid workers, residents, the 12345 hotline) post reports to intake; departments
consume their ``dispatch.<department>`` queues and report in, progress, resolve or return;
grid workers take verification and follow-up tasks from ``dispatch.tier.<tier>``; reporters
rate closed cases; communities and streets sometimes blow the whistle on escalated cases.
The decisions live in ``gridflow.simulation.plan`` (pure, seeded); the I/O in
``gridflow.simulation.actors``. ``python -m gridflow.simulator`` is the same as
``gridflow simulate``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DEFAULT_RATE = 10.0  # reports per real minute
DEFAULT_LATE = 0.15


def _default_intake() -> str:
    return f"http://{os.environ.get('GRIDFLOW_HTTP_ADDRESS') or '127.0.0.1:8000'}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, metavar="N",
                   help=f"reports per REAL minute, whatever the speed (default {DEFAULT_RATE:g}; "
                   "0: only answer what arrives)")
    p.add_argument("--speed", type=float, default=None, metavar="S",
                   help="demo seconds per real second: people's delays (report in after 5–40 "
                   "demo minutes, resolve after 1–6 demo hours …) are divided by it. Must match "
                   "the services' GRIDFLOW_CLOCK_SPEED (default: that variable, else 1)")
    p.add_argument("--intake", default=_default_intake(), metavar="URL",
                   help="intake's base URL (default http://$GRIDFLOW_HTTP_ADDRESS or "
                   "http://127.0.0.1:8000)")
    p.add_argument("--amqp-uri", default=os.environ.get("AMQP_URI",
                                                        "amqp://guest:guest@127.0.0.1:5672/"),
                   metavar="URI", help="broker URL (default $AMQP_URI)")
    p.add_argument("--seed", type=int, default=None, metavar="K",
                   help="seed of the random choices (default: a new one each run)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this many real seconds (default: until Ctrl-C / SIGTERM)")
    p.add_argument("--late", type=float, default=DEFAULT_LATE, metavar="FRACTION",
                   help="share of assignments whose department does not report in before the "
                   f"deadline, so that cases escalate (default {DEFAULT_LATE})")
    p.add_argument("--every", type=float, default=10.0, metavar="SECONDS",
                   help="a progress line this often (default 10)")
    p.add_argument("--workers", type=int, default=4, metavar="N",
                   help="HTTP calls in flight at most (default 4)")
    keys = p.add_argument_group(
        "API keys", "intake answers only requests with an API key (gridflow keys issue). The "
        "simulator plays patrol apps, departments and operators alike, so it needs an ADMIN "
        "key, or one key per role it plays; a role's own key is used where given, the admin "
        "key for the rest. A key intake refuses (401, 403) stops the run with the reason. "
        "Prefer $GRIDFLOW_API_KEY to --api-key: a command line shows in ps.")
    keys.add_argument("--api-key", default=os.environ.get("GRIDFLOW_API_KEY") or None,
                      metavar="KEY", help="an admin API key (role admin; default "
                      "$GRIDFLOW_API_KEY), e.g. from `gridflow keys issue --role admin "
                      "--client simulator --rate 0`")
    keys.add_argument("--patrol-key", default=None, metavar="KEY",
                      help="a patrol_app key for the whole district: reports, verifications "
                      "(核查), ratings (评议), follow-up tasks (回访)")
    keys.add_argument("--operator-key", default=None, metavar="KEY",
                      help="an operator key for the whole district: whistles (吹哨) and "
                      "dispatches by hand")
    keys.add_argument("--department-key", action="append", default=[], metavar="DEPT=KEY",
                      help="a department key for DEPT's answers over HTTP (report in, "
                      "progress, resolve, return); once per department")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridflow simulate", description=DESCRIPTION)
    add_arguments(p)
    return p


DESCRIPTION = (
    "Play a district's day against a running gridflow: reporters post reports at --rate a "
    "real minute (random categories weighted to the everyday ones, random cells, sometimes a "
    "duplicate); departments consume dispatch.<department> (consumer priority -1, below your "
    "own `gridflow subscribe`) and report in, progress, resolve or return (退单) over HTTP or "
    "gridflow.responses, a --late share after the deadline so that cases escalate; grid "
    "workers verify (核查) and call back (回访); reporters rate (评议); communities sometimes "
    "blow the whistle (吹哨). A progress line every --every seconds; Ctrl-C or SIGTERM stops "
    "cleanly. It needs an admin API key (--api-key or $GRIDFLOW_API_KEY), or a key per role it "
    "plays (see API keys below)."
)


def _speed(args: Any) -> float:
    if args.speed is not None:
        return float(args.speed)
    return float(os.environ.get("GRIDFLOW_CLOCK_SPEED") or 1.0)


def keys_of(args: Any) -> Any:
    """The simulator's ``Keys`` from its arguments; ValueError for a malformed one."""
    from gridflow.simulation.actors import Keys

    departments: dict[str, str] = {}
    for item in getattr(args, "department_key", None) or []:
        dept, sep, token = item.partition("=")
        if not sep or not dept.strip() or not token.strip():
            raise ValueError(f"--department-key wants DEPT=KEY, got {item.split('=')[0]!r}…")
        departments[dept.strip()] = token.strip()
    return Keys(admin=getattr(args, "api_key", None) or None,
                patrol=getattr(args, "patrol_key", None) or None,
                operator=getattr(args, "operator_key", None) or None,
                departments=departments)


def main(args: Any) -> int:
    from gridflow.simulation.actors import KEY_HINT, AccessRefused, Consumer, Http, Responder
    from gridflow.simulation.plan import Action, Outcome, Simulation, Tunables
    from gridflow.simulation.world import World
    from shared.amqp.topology import DISPATCH_TIERS, dispatch_queue, tier_queue
    from shared.clock import ScaledClock, clock_from_env

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s simulator %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    log = logging.getLogger("gridflow.simulator")
    speed = _speed(args)
    try:
        tunables = Tunables(rate=args.rate, late=args.late)
        if speed <= 0:
            raise ValueError("--speed must be positive")
        clock = clock_from_env()
        keys = keys_of(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if not keys.any:
        log.error("no API key: %s", KEY_HINT)
        return 2
    scaled = clock if isinstance(clock, ScaledClock) else None
    if scaled is not None and abs(scaled.speed - speed) > 1e-9:
        log.warning("--speed %g differs from the services' GRIDFLOW_CLOCK_SPEED %g: delays "
                    "will not be what they should", speed, scaled.speed)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            log.info("stopping (signal %d): no new actions; in-flight calls finish", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    http = Http(args.intake, stop, keys)
    try:
        world = _load_world(http, stop, log, World)
    except AccessRefused as exc:
        log.error("%s. Stopping.", exc)
        return 3
    if world is None:
        return 0  # stopped before intake answered
    run_id = uuid.uuid4().hex[:8]
    sim = Simulation(world, speed=speed, tunables=tunables, seed=args.seed, run_id=run_id,
                     demo_now=scaled.now if scaled is not None else None)
    missing = keys.missing(sorted(set(world.departments) - sim.amqp_departments))
    if missing:
        log.error("no API key for %s: %s", "; ".join(missing), KEY_HINT)
        return 2
    lock = threading.Lock()

    def on_message(_key: str, message_id: str, msg: Any) -> None:
        with lock:
            sim.on_message(msg, time.monotonic(), message_id)

    queues = [dispatch_queue(d) for d in world.departments] + \
        [tier_queue(t) for t in DISPATCH_TIERS]
    consumer = Consumer(args.amqp_uri, queues, on_message, stop)
    responder = Responder(args.amqp_uri)

    def execute(action: Action) -> None:
        try:
            if action.via == "amqp":
                outcome = responder.publish(action, sim.message_id(action))
            else:
                outcome = http.act(action)
        except Exception as exc:  # never let one action end the run
            outcome = Outcome(0, None, f"{type(exc).__name__}: {exc}")
        if not outcome.ok:
            what = f"{action.via} {action.kind} {action.case_id or action.body.get('report_id')}"
            if action.department:
                what += f" {action.department}"
            log.warning("%s -> %s %s", what, outcome.status or "no answer",
                        (outcome.error or str(outcome.body or ""))[:300])
        with lock:
            sim.after(action, outcome, time.monotonic())

    log.info("simulating run %s against %s: %g reports a real minute, speed %g (a demo hour "
             "in %s real), late %g, seed %s; %d departments, %d cells, %d categories; "
             "answering over AMQP: %s", run_id, args.intake, tunables.rate, speed,
             _span(3600 / speed), tunables.late, args.seed, len(world.departments),
             len(world.cells), len(world.categories),
             ", ".join(sorted(sim.amqp_departments)) or "none")
    consumer.start()
    pool = ThreadPoolExecutor(max_workers=max(1, args.workers), thread_name_prefix="sim-http")
    started = time.monotonic()
    ends = started + args.duration if args.duration is not None else None
    next_line = started + args.every
    with lock:
        sim.start(started)
    try:
        while not stop.is_set():
            now = time.monotonic()
            if ends is not None and now >= ends:
                log.info("--duration %gs reached", args.duration)
                break
            with lock:
                actions = sim.due(now)
                nxt = sim.schedule.next_at()
            for action in actions:
                pool.submit(execute, action)
            if now >= next_line:
                _progress(log, sim, lock, now - started, scaled)
                next_line = now + args.every
            wait = 0.5 if nxt is None else min(max(nxt - now, 0.02), 0.5)
            if ends is not None:
                wait = min(wait, max(ends - now, 0.0))
            stop.wait(wait)
    finally:
        stop.set()  # the consumer stops consuming; HTTP retries stop
        consumer.join(timeout=10)
        pool.shutdown(wait=True, cancel_futures=True)  # in-flight calls finish
        responder.close()
        _progress(log, sim, lock, time.monotonic() - started, scaled, final=True)
    if http.refused is not None:
        log.error("%s. Stopped.", http.refused.message())
        return 3
    return 0


def _load_world(http: Any, stop: threading.Event, log: logging.Logger, world_cls: Any) -> Any:
    """The district from intake's API, waiting for intake to answer."""
    shown = False
    while not stop.is_set():
        try:
            return world_cls.from_api(http.get("/api/v1/categories"), http.get("/api/v1/grids"))
        except (OSError, ValueError, KeyError) as exc:
            if not shown:
                log.info("waiting for intake at %s (%s) …", http.base_url, exc)
                shown = True
            stop.wait(2.0)
    return None


def _progress(log: logging.Logger, sim: Any, lock: threading.Lock, elapsed: float,
              clock: Any, final: bool = False) -> None:
    with lock:
        line = sim.stats.line()
        pending = len(sim.schedule)
    demo = ""
    if clock is not None:
        from zoneinfo import ZoneInfo

        demo = f" demo={clock.now().astimezone(ZoneInfo('Asia/Shanghai')):%a %H:%M}"
    log.info("%s t=%.0fs%s %s pending=%d", "stopped:" if final else "progress", elapsed, demo,
             line, pending)


def _span(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.1f} s"


def cli(argv: list[str] | None = None) -> int:
    return main(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
