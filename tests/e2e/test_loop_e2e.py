"""The closed loop end to end, as real clients drive it: a patrol app and residents over
HTTP, departments over HTTP and over AMQP (``gridflow.responses``), their systems reading
``dispatch.<department>`` with pika, the grid worker's tasks on ``dispatch.tier.compound``,
the reporters' feedback arriving at their app's webhook.

One case of 消防通道堵塞 (fire leads, police and urban management assist) goes through: a
duplicate report attached; police returns it and traffic takes over; progress; resolve;
a failed verification and rework; resolve again; a passed verification and closing; a
rating; an unsatisfied rating that reopens it.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from processes import Processes

from gridflow.respond import publish
from support import DEMO_CELL, report, wait_for

pytestmark = pytest.mark.e2e
GRID_WORKER = {"name": "邓海燕", "tier": "compound", "code": DEMO_CELL}
PHOTO = ["https://img.example/site.jpg"]


class Webhook:
    """The reporters' app: a local HTTP endpoint that records what gridflow pushes."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/feedback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def types_for(self, case_id: str) -> list[str]:
        return [m["type"] for m in self.received if m["case_id"] == case_id]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


class Queues:
    """Departments' and grid tiers' systems: pika consumers that keep what they read."""

    def __init__(self, amqp_uri: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
        self.channel = self.conn.channel()
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def take(self, queue: str) -> list[dict[str, Any]]:
        got = self.seen.setdefault(queue, [])
        while True:
            method, props, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return got
            got.append({"type": props.type, **json.loads(body)})

    def wait(self, queue: str, type_: str, case_id: str, count: int = 1) -> list[dict]:
        def enough() -> list[dict] | None:
            hits = [m for m in self.take(queue) if m["type"] == type_ and m["case_id"] == case_id]
            return hits if len(hits) >= count else None

        return wait_for(enough, timeout=20, what=f"{count} × {type_} on {queue}")


def _post(api: Processes, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = api.http.post(f"{api.base_url}{path}", json=body, timeout=10)
    assert r.status_code == status, r.text
    return r.json()


def _case(api: Processes, case_id: str) -> dict[str, Any]:
    return api.http.get(f"{api.base_url}/api/v1/cases/{case_id}", timeout=10).json()


def _until(api: Processes, case_id: str, what: str, ok: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        case = _case(api, case_id)
        return case if ok(case) else None

    return wait_for(check, timeout=20, what=what)


def test_one_case_goes_round_the_whole_loop(
    system: Processes, amqp_uri_pika: str, webhook: Webhook
) -> None:
    api, amqp = system, amqp_uri_pika
    queues = Queues(amqp)

    def respond(dept: str, action: str, case_id: str, **body: Any) -> None:
        publish(amqp, dept, action, {"case_id": case_id, **body}, str(uuid.uuid4()))

    resident = {"kind": "resident", "id": "res-17", "name": "王芳", "phone": "13800000017",
                "webhook_url": webhook.url}
    case_id = _post(api, "/api/v1/reports", report("loop-1", "E0402", reporter=resident),
                    201)["case_id"]
    for dept in ("fire", "police", "urban_mgmt"):
        queues.wait(f"dispatch.{dept}", "case.assigned", case_id)

    # a neighbour reports the same blocked lane: linked, and follows the case
    neighbour = {"kind": "resident", "id": "res-18", "name": "李强", "webhook_url": webhook.url}
    dup = _post(api, "/api/v1/reports", report("loop-2", "E0402", reporter=neighbour,
                                                  description="小区消防通道又被堵了"), 201)
    assert dup["duplicate_of"] == case_id and dup["state"] == "duplicate"

    # 1. police returns it over AMQP; the catalogue's next candidate, traffic, takes it
    respond("police", "return", case_id, reason_code="not_our_responsibility",
            note="占道车辆属交警职责")
    [assigned] = queues.wait("dispatch.traffic", "case.assigned", case_id)
    assert assigned["data"]["assignment"]["role"] == "assist"
    case = _case(api, case_id)
    police = next(a for a in case["assignments"] if a["department"] == "police")
    assert police["state"] == "returned"
    assert police["returned"]["reason_code"] == "not_our_responsibility"

    # every department on the case reports in, over HTTP or AMQP
    _post(api, f"/api/v1/cases/{case_id}/assignments/fire/ack", {"actor": "消防站 值班"})
    respond("urban_mgmt", "ack", case_id, actor="城管中队")
    _post(api, f"/api/v1/cases/{case_id}/assignments/traffic/ack", {})
    _until(api, case_id, "everyone reported in", lambda c: c["state"] == "acknowledged")

    # 2. progress from an assisting department reaches the lead and the reporters
    respond("urban_mgmt", "progress", case_id, note="已联系车主挪车", media_urls=PHOTO)
    [progress] = queues.wait("dispatch.fire", "case.progress", case_id)
    assert progress["data"]["progress"]["department"] == "urban_mgmt"

    # 3. every department resolves; the grid worker gets a verification task
    _post(api, f"/api/v1/cases/{case_id}/assignments/fire/resolve", {"note": "通道已清空"})
    respond("urban_mgmt", "resolve", case_id, note="违停车辆已处罚", media_urls=PHOTO)
    _post(api, f"/api/v1/cases/{case_id}/assignments/traffic/resolve", {"note": "已拖离"})
    _until(api, case_id, "resolved", lambda c: c["state"] == "resolved")
    [task] = queues.wait("dispatch.tier.compound", "task.assigned", case_id)
    assert task["data"]["task"]["kind"] == "verification"

    # 4. the grid worker finds the lane blocked again: rework for the lead
    _post(api, f"/api/v1/cases/{case_id}/verification", {
        "passed": False, "by": GRID_WORKER, "note": "通道仍有杂物堆放", "media_urls": PHOTO})
    case = _case(api, case_id)
    assert case["state"] == "in_progress"  # fire works again; the others stay resolved
    fire = next(a for a in case["assignments"] if a["department"] == "fire")
    assert fire["state"] == "dispatched" and fire["reworks"] == 1
    [rework] = queues.wait("dispatch.fire", "case.reworked", case_id)
    assert rework["data"]["rework"]["reason"] == "通道仍有杂物堆放"

    # 5. fire reports in and resolves again (over AMQP this time)
    respond("fire", "ack", case_id)
    respond("fire", "resolve", case_id, note="杂物已清理", media_urls=PHOTO)
    _until(api, case_id, "resolved again", lambda c: c["state"] == "resolved")
    queues.wait("dispatch.tier.compound", "task.assigned", case_id, count=2)

    # 6. verified on site: closed
    _post(api, f"/api/v1/cases/{case_id}/verification", {
        "passed": True, "by": GRID_WORKER, "note": "通道畅通", "media_urls": PHOTO})
    case = _case(api, case_id)
    assert case["state"] == "closed"
    public = api.http.get(f"{api.base_url}/api/v1/public/cases/{case_id}", timeout=10).json()
    assert public["status"] == "closed" and "王芳" not in json.dumps(public, ensure_ascii=False)

    # 7. the reporter rates it; 8. the neighbour is not satisfied: the case reopens
    _post(api, f"/api/v1/cases/{case_id}/rating",
          {"score": 4, "fixed": True, "reporter_id": "res-17"})
    assert _case(api, case_id)["state"] == "closed"
    case = _post(api, f"/api/v1/cases/{case_id}/rating",
                 {"score": 2, "fixed": False, "comment": "晚上又堵了", "reporter_id": "res-18"})
    assert case["state"] == "in_progress"
    assert next(a for a in case["assignments"] if a["department"] == "fire")["reworks"] == 2

    # the timeline tells the story in order
    kinds = [t["kind"] for t in _case(api, case_id)["timeline"]]
    story = ["reported", "routed", "duplicate_attached", "returned", "rerouted", "progress",
             "case_resolved", "verification_task", "verification_failed", "reopened",
             "case_resolved", "verified", "closed", "rated", "rated", "reopened"]
    at = -1
    for k in story:  # each after the one before; a missing step fails here
        at = kinds.index(k, at + 1)

    # both reporters heard about the closing at their app (the duplicate's too)
    def closings() -> list[dict[str, Any]] | None:
        ms = [m for m in webhook.received
              if m["case_id"] == case_id and m["type"] == "case.closed"]
        return ms if len(ms) >= 2 else None

    got = wait_for(closings, timeout=30, what="the closing reaches both reporters' app")
    assert all("rating" in m["links"] for m in got)
    queues.conn.close()
