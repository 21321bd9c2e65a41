"""Run one gridflow service in this process: ``python -m gridflow.run_service intake``.

eventlet must patch the standard library before anything else is imported.
"""

import warnings

warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging.config  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from eventlet.event import Event  # noqa: E402
from nameko.cli.main import setup_yaml_parser  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402
from sqlalchemy import exc as sa_exc  # noqa: E402

from gridflow import SERVICES  # noqa: E402
from shared.config import PROJECT_ROOT, http_address, setting  # noqa: E402
from shared.logs import logging_config  # noqa: E402

DEFAULT_CONFIG = PROJECT_ROOT / "deploy" / "config" / "gridflow.yaml"
START_GRACE_S = 10.0
START_MAX_BACKOFF_S = 10.0  # longest wait between two starts while the database is down
# What a start that could not reach the database raises (the store creates its tables).
DATABASE_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def load_config(path: Path) -> dict:
    setup_yaml_parser()
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def service_class(name: str) -> type:
    module, _, attr = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gridflow run", description="Run one gridflow service in the foreground."
    )
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"nameko YAML config (default: {DEFAULT_CONFIG})",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("GRIDFLOW_SERVICE", args.service)
    config = load_config(args.config)
    config["WEB_SERVER_ADDRESS"] = http_address(args.service)
    logging.config.dictConfig(
        logging_config(args.service, os.environ.get("GRIDFLOW_LOG_LEVEL", "INFO"))
    )
    log = logging.getLogger("gridflow")
    sys.exit(run(service_class(args.service), config, log))


def run(cls: type, config: dict, log: logging.Logger) -> int:
    """Run until SIGTERM or Ctrl-C (graceful stop); a second signal kills at once.

    A service whose database does not answer at start waits for it, trying again with a
    backoff (up to ``GRIDFLOW_START_MAX_BACKOFF_S``), instead of exiting: a supervisor
    restarting it at once would give up after a few exits, and the service would stay down
    after the database came back. A signal while it waits ends it cleanly.

    A stop asked for while the service is still starting waits until it has started:
    nameko cannot stop consumers that are half way through connecting, and hangs. A start
    that does not finish within START_GRACE_S of the signal (no broker) is killed; nothing
    is lost by that: unacked messages return to their queues, the outbox stays.
    """
    signals = 0
    started = False
    runner: ServiceRunner | None = None
    interrupted = Event()

    def say(msg: str, **kwargs: Any) -> None:
        """Log from a signal handler: in a green thread of its own, since the handler may
        run on eventlet's hub, where logging's threading.current_thread() can raise (seen
        in CI: a KeyError that left intake running until it was killed)."""
        eventlet.spawn_n(log.info, msg, **kwargs)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal signals
        signals += 1
        if not interrupted.ready():
            interrupted.send()
        if signals > 1:
            say("killing", extra={"signal": signum})
            if runner is not None:
                eventlet.spawn_n(runner.kill)
        elif started:
            say("stopping", extra={"signal": signum})
            eventlet.spawn_n(runner.stop)
        else:
            say("stopping once started", extra={"signal": signum,
                                                "give_up_after_s": START_GRACE_S})
            eventlet.spawn_after(START_GRACE_S, kill_if_not_started)

    def kill_if_not_started() -> None:
        if not started:
            log.warning("still not started (is the broker reachable?); exiting")
            logging.shutdown()
            os._exit(1)  # start() cannot be interrupted; nothing started, nothing to lose

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("starting", extra={"pid": os.getpid()})
    max_backoff = float(setting(config, "GRIDFLOW_START_MAX_BACKOFF_S", START_MAX_BACKOFF_S))
    backoff = min(1.0, max_backoff)
    while True:
        runner = ServiceRunner(config)
        runner.add_service(cls)
        try:
            runner.start()
            break
        except DATABASE_UNAVAILABLE as exc:
            log.warning(
                "database unreachable; starting again when it answers",
                extra={"error": str(exc).splitlines()[0], "retry_in_s": backoff},
            )
            runner.kill()
        with eventlet.Timeout(backoff, False):
            interrupted.wait()
        if interrupted.ready():
            log.info("stopped before the database answered")
            return 0
        backoff = min(backoff * 2, max_backoff)
    started = True
    if signals == 1:
        log.info("stopping")
        eventlet.spawn_n(runner.stop)
    try:
        runner.wait()
    except Exception:
        log.exception("service died")
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    main()
