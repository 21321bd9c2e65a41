"""``gridflow up`` stopped by SIGTERM stops its services cleanly, whenever the signal comes:
while it waits for intake to answer (it used to die there and leave the four services
running), and when a second one comes while it stops them (it used to end in a traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from processes import distinct_ports, healthy

from gridflow import SERVICES
from support import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_up_stops_cleanly_when_signalled_twice(amqp_uri_pika: str, tmp_path: Path) -> None:
    others = [s for s in SERVICES if s != "intake"]
    intake, *ports = distinct_ports(1 + len(others))
    http = f"127.0.0.1:{intake}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AMQP_URI": amqp_uri_pika,
        "GRIDFLOW_VAR_DIR": str(tmp_path / "var"),
        "GRIDFLOW_HTTP_ADDRESS": http,
        **{f"GRIDFLOW_{s.upper()}_HTTP_ADDRESS": f"127.0.0.1:{p}"
           for s, p in zip(others, ports, strict=True)},
    }
    proc = subprocess.Popen([sys.executable, "-m", "gridflow.cli", "up"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: healthy(f"http://{http}"), timeout=60, what="intake up")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=40)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert "all services stopped" in out


def test_the_first_signal_ignores_the_next_before_the_stop_begins() -> None:
    """The race CI once hit: a second SIGTERM landing between the first one's
    KeyboardInterrupt and ``shutdown`` interrupted the clean stop with a traceback."""
    script = (
        "import os, signal\n"
        "from gridflow.supervisor import stop_on_signal\n"
        "stop_on_signal()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    signal.pause()\n"
        "except KeyboardInterrupt:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    print('still here', signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "still here True"
