"""End to end: the four services as separate processes, as a district would run them.

A patrol app posts a report over HTTP; the responsible departments receive their
assignment on ``dispatch.<department>`` with pika; they report in and resolve over HTTP;
the timeline reads back the whole story. The reference department client forwards a
dispatch to a local HTTP endpoint and acks only after that endpoint took it.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import requests

from gridflow import SERVICES
from support import queue_depth, report, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


class Processes:
    def __init__(self, env: dict[str, str], log_dir: Path, base_url: str) -> None:
        self.env, self.log_dir, self.base_url = env, log_dir, base_url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "gridflow.run_service", name],
            cwd=ROOT,
            env={**self.env, "GRIDFLOW_SERVICE": name},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    def logs(self) -> str:
        return "\n".join(
            f"--- {f.name}\n{f.read_text()[-3000:]}" for f in self.log_dir.glob("*.log")
        )


@pytest.fixture
def system(
    rabbit_config: dict,
    database_url: str | None,
    tmp_path: Path,
    http_port: int,
    amqp_uri_pika: str,
) -> Iterator[Processes]:
    base_url = f"http://127.0.0.1:{http_port}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AMQP_URI": amqp_uri_pika,
        "GRIDFLOW_VAR_DIR": str(tmp_path / "var"),
        "GRIDFLOW_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
        "GRIDFLOW_PUBLIC_URL": base_url,
        **({"DATABASE_URL": database_url} if database_url else {}),
    }
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    procs = Processes(env, log_dir, base_url)
    for name in SERVICES:
        procs.start(name)
    try:
        wait_for(lambda: _healthy(base_url), timeout=30, what="intake health")
        yield procs
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop()
    crashed = {n: p.returncode for n, p in procs.procs.items() if p.returncode not in (0, -15)}
    assert not crashed, f"services exited badly: {crashed}\n{procs.logs()}"


def _healthy(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _receive(amqp_uri: str, queue: str, timeout: float) -> tuple[Any, bytes]:
    """The first message on ``queue`` within ``timeout``, taken by a pika consumer (acked)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = conn.channel()
        for method, props, body in channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                raise AssertionError(f"nothing on {queue} within {timeout}s")
            channel.basic_ack(method.delivery_tag)
            channel.cancel()
            return props, body
    finally:
        conn.close()
    raise AssertionError("unreachable")


def test_report_reaches_departments_and_the_loop_closes(
    system: Processes, amqp_uri_pika: str
) -> None:
    api = system.base_url
    t0 = time.monotonic()
    r = requests.post(f"{api}/api/v1/reports", json=report("e2e-1", "E0402"), timeout=10)
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]

    props, body = _receive(amqp_uri_pika, "dispatch.fire", timeout=10)
    latency_ms = (time.monotonic() - t0) * 1000
    print(f"\nHTTP accept → dispatch received on dispatch.fire: {latency_ms:.0f} ms")
    msg = json.loads(body)
    assert props.type == "case.assigned" and props.message_id == msg["event_id"]
    assert props.delivery_mode == 2 and props.content_type == "application/json"
    assert msg["case_id"] == case_id
    assert msg["data"]["assignment"]["role"] == "lead"
    for dept in ("police", "urban_mgmt"):
        props, body = _receive(amqp_uri_pika, f"dispatch.{dept}", timeout=10)
        assert json.loads(body)["data"]["assignment"]["role"] == "assist"

    # a second post of the same report is the same case, and nothing more is dispatched
    again = requests.post(f"{api}/api/v1/reports", json=report("e2e-1", "E0402"), timeout=10)
    assert again.status_code == 200 and again.json()["case_id"] == case_id

    for dept in ("fire", "police", "urban_mgmt"):
        links = f"{api}/api/v1/cases/{case_id}/assignments/{dept}"
        assert (
            requests.post(
                f"{links}/ack", json={"actor": f"{dept} duty officer"}, timeout=10
            ).status_code
            == 200
        )
    for dept in ("police", "urban_mgmt", "fire"):
        links = f"{api}/api/v1/cases/{case_id}/assignments/{dept}"
        r = requests.post(f"{links}/resolve", json={"note": f"{dept}: 通道已清空"}, timeout=10)
        assert r.status_code == 200, r.text
    assert r.json()["state"] == "resolved"

    case = requests.get(f"{api}/api/v1/cases/{case_id}", timeout=10).json()
    kinds = [t["kind"] for t in case["timeline"]]
    assert kinds[:2] == ["reported", "routed"]
    assert kinds.count("dispatched") == 3 and kinds.count("acknowledged") == 3
    assert kinds[-5:] == ["resolved", "resolved", "resolved", "case_resolved", "verification_task"]
    times = [t["at"] for t in case["timeline"]]
    assert times == sorted(times)
    time.sleep(0.5)  # any stray second dispatch would have arrived by now
    for dept in ("fire", "police", "urban_mgmt"):
        assert queue_depth(amqp_uri_pika, f"dispatch.{dept}") == 0


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_department_client_forwards_then_acks(
    system: Processes, amqp_uri_pika: str, tmp_path: Path
) -> None:
    _Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/gridflow"
    try:
        r = requests.post(
            f"{system.base_url}/api/v1/reports", json=report("e2e-2", "E0101"), timeout=10
        )
        case_id = r.json()["case_id"]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "gridflow.cli",
                "subscribe",
                "--department",
                "sanitation",
                "--forward",
                hook_url,
                "--amqp-uri",
                amqp_uri_pika,
                "--max-messages",
                "1",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ASSIGNED" in out.stdout and case_id in out.stdout
    assert "1 received, 1 handled" in out.stdout
    assert len(_Hook.received) == 1
    headers, body = _Hook.received[0]
    assert headers["X-Gridflow-Type"] == "case.assigned"
    assert json.loads(body)["event_id"] == headers["X-Gridflow-Message-Id"]
    assert queue_depth(amqp_uri_pika, "dispatch.sanitation") == 0  # acked after the forward
