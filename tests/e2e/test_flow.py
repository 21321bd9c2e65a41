"""End to end: the four services as separate processes, as a district would run them.

A patrol app posts a report over HTTP; the responsible departments receive their
assignment on ``dispatch.<department>`` with pika; they report in and resolve over HTTP;
the timeline reads back the whole story. The reference department client forwards a
dispatch to a local HTTP endpoint, signed, and acks only after that endpoint took it.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from processes import METRICS_TOKEN, Processes, receive

from gridflow.webhooks import verify_request
from support import bearer, queue_depth, report

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_report_reaches_departments_and_the_loop_closes(
    system: Processes, amqp_uri_pika: str
) -> None:
    api, http = system.base_url, system.http
    # no key, no report; the scraper's token, and only that, opens /metrics
    r = requests.post(f"{api}/api/v1/reports", json=report("e2e-0", "E0402"), timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(f"{api}/metrics", headers=http.headers, timeout=10).status_code == 401
    metrics = requests.get(f"{api}/metrics", headers=bearer(METRICS_TOKEN), timeout=10)
    assert metrics.status_code == 200 and "gridflow_http_requests_total" in metrics.text

    t0 = time.monotonic()
    r = http.post(f"{api}/api/v1/reports", json=report("e2e-1", "E0402"), timeout=10)
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]

    props, body = receive(amqp_uri_pika, "dispatch.fire", timeout=10)
    latency_ms = (time.monotonic() - t0) * 1000
    print(f"\nHTTP accept → dispatch received on dispatch.fire: {latency_ms:.0f} ms")
    msg = json.loads(body)
    assert props.type == "case.assigned" and props.message_id == msg["event_id"]
    assert props.delivery_mode == 2 and props.content_type == "application/json"
    assert msg["case_id"] == case_id
    assert msg["data"]["assignment"]["role"] == "lead"
    for dept in ("police", "urban_mgmt"):
        props, body = receive(amqp_uri_pika, f"dispatch.{dept}", timeout=10)
        assert json.loads(body)["data"]["assignment"]["role"] == "assist"

    # a second post of the same report is the same case, and nothing more is dispatched
    again = http.post(f"{api}/api/v1/reports", json=report("e2e-1", "E0402"), timeout=10)
    assert again.status_code == 200 and again.json()["case_id"] == case_id

    for dept in ("fire", "police", "urban_mgmt"):
        links = f"{api}/api/v1/cases/{case_id}/assignments/{dept}"
        assert (
            http.post(
                f"{links}/ack", json={"actor": f"{dept} duty officer"}, timeout=10
            ).status_code
            == 200
        )
    for dept in ("police", "urban_mgmt", "fire"):
        links = f"{api}/api/v1/cases/{case_id}/assignments/{dept}"
        r = http.post(f"{links}/resolve", json={"note": f"{dept}: 通道已清空"}, timeout=10)
        assert r.status_code == 200, r.text
    assert r.json()["state"] == "resolved"

    case = http.get(f"{api}/api/v1/cases/{case_id}", timeout=10).json()
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
        r = system.http.post(
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
                "--secret",
                "dept-secret",
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
    assert verify_request("dept-secret", headers, body)["case_id"] == case_id  # signed
    assert queue_depth(amqp_uri_pika, "dispatch.sanitation") == 0  # acked after the forward
