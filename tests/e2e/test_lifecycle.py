"""A service asked to stop while it is still starting stops cleanly, and promptly.

Regression: nameko cannot stop consumers half way through connecting; a SIGTERM during
start-up (a supervisor restarting, a test tearing down) left escalation and notify hanging
until they were killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nameko.testing.utils import find_free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a service process; whatever happens in the test, none outlives it."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "gridflow.run_service", service],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("service", ["escalation", "notify"])
def test_a_service_stopped_while_starting_exits_cleanly(
    service: str, amqp_uri_pika: str, tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "AMQP_URI": amqp_uri_pika,
           "GRIDFLOW_VAR_DIR": str(tmp_path),
           "GRIDFLOW_ESCALATION_HTTP_ADDRESS": f"127.0.0.1:{find_free_port()}",
           "GRIDFLOW_NOTIFY_HTTP_ADDRESS": f"127.0.0.1:{find_free_port()}"}
    proc = spawn(service, env)
    log = tmp_path / "starting"
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    for line in proc.stdout:  # the first log line: it is starting, not started
        log.write_bytes(line)
        break
    assert time.monotonic() < deadline
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=25)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{service} did not stop within 25 s of a SIGTERM during start-up:\n"
                    + out.decode()[-3000:])
    assert proc.returncode == 0, out.decode()[-3000:]
    assert b'"stopped"' in out


def test_a_service_that_cannot_reach_the_broker_still_stops_on_sigterm(
    tmp_path: Path, spawn: Callable[..., Any]
) -> None:
    env = {"PATH": os.environ.get("PATH", ""),
           "AMQP_URI": f"amqp://guest:guest@127.0.0.1:{find_free_port()}/",  # nobody there
           "GRIDFLOW_VAR_DIR": str(tmp_path),
           "GRIDFLOW_ESCALATION_HTTP_ADDRESS": f"127.0.0.1:{find_free_port()}",
           "GRIDFLOW_NOTIFY_HTTP_ADDRESS": f"127.0.0.1:{find_free_port()}"}
    proc = spawn("escalation", env)
    assert proc.stdout is not None
    proc.stdout.readline()  # "starting"
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("a service with no broker ignored SIGTERM")
    assert time.monotonic() - started < 20
    assert b"still not started" in out and proc.returncode == 1
