"""notify on the real broker and databases: the new public messages (case.progress to the
lead, task.assigned to the grid worker, case.needs_dispatch to the tier owner) and reporter
feedback (反馈) through a real local webhook and a recording SMS gateway. The webhook
receiver verifies every POST's signature with ``gridflow.webhooks.verify_request`` (as a
reporter's app would) and answers 401 when it does not hold.

NotifyService runs alone in this process on a fake clock; the tests publish its events to
``gridflow.events`` themselves, read the public queues, and drive the feedback sender with
``entrypoint_hook`` (its ticker is set to an hour) instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import amqp
import eventlet
import kombu
import pytest
from nameko.testing.services import entrypoint_hook, entrypoint_waiter
from sqlalchemy import func, select

from gridflow.webhooks import WebhookSignatureError, verify_request
from services.notify import feedback as fb
from services.notify.channels import WebhookClient
from services.notify.dispatch import message_id
from services.notify.outbound import FeedbackSender, add_messages
from services.notify.service import NotifyService
from services.notify.store import Base, FeedbackDelivery
from services.routing.rules import route_with
from shared.amqp import topology as topo
from shared.clock import FakeClock
from shared.db import create_tables, is_postgres, make_engine, service_database_url
from shared.events import Event, make_event
from shared.logs import JsonFormatter
from shared.reference import load_reference
from support import DEMO_CELL, get_messages, message_json, saw, wait_for

REF = load_reference(Path(__file__).resolve().parents[2] / "deploy" / "demo")
T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # the FakeClock's start: Mon 09:00 Beijing
CASE_ID = "20261123-000042"
PHONE = "13800000001"
DUP_PHONE = "13900000002"
COMMUNITY = "511802001001"  # 桐梓林社区
SECRETS = "whsec-new,whsec-old"  # notify signs with both while the app rotates


# -- a recording SMS gateway, chosen by GRIDFLOW_SMS_GATEWAY -----------------------------------
class RecordingSms:
    """Every text 'sent', in order; ``fail_next`` makes the next sends raise."""

    sent: list[tuple[str, str]] = []
    fail_next = 0

    def send(self, phone: str, text: str) -> None:
        if RecordingSms.fail_next:
            RecordingSms.fail_next -= 1
            raise ConnectionError(f"gateway unavailable for {phone}")
        RecordingSms.sent.append((phone, text))


GATEWAY = f"{__name__}:RecordingSms"


# -- the reporter's app: a real HTTP server that fails each delivery's first POST --------------
class App(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any], int]] = []  # (path, body, status answered)
    raw: list[tuple[dict[str, str], bytes]] = []  # each POST as it came: headers, raw body
    refused: list[str] = []  # why a signature did not hold
    lock = threading.Lock()
    mode = "flaky"  # flaky: 503 on a delivery's first POST, then 200; or "gone": 410; "down"
    secrets: list[str] = ["whsec-old"]  # the app has not switched to the new secret yet
    clock_ahead_s = 0.0  # the app's clock, ahead of this machine's by this much

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            body = verify_request(App.secrets, self.headers, raw,
                                  now=time.time() + App.clock_ahead_s)
        except WebhookSignatureError as exc:
            App.refused.append(exc.reason)
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with App.lock:
            App.raw.append((dict(self.headers), raw))
            seen = any(b["delivery_id"] == body["delivery_id"] for _, b, _ in App.received)
            status = {"flaky": 200 if seen else 503, "gone": 410, "down": 503}[App.mode]
            App.received.append((self.path, body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass

    @classmethod
    def ok(cls) -> list[dict[str, Any]]:
        return [b for _, b, s in cls.received if s == 200]


@pytest.fixture(autouse=True)
def _reset() -> None:
    RecordingSms.sent, RecordingSms.fail_next = [], 0
    App.received, App.raw, App.refused, App.mode = [], [], [], "flaky"
    App.secrets, App.clock_ahead_s = ["whsec-old"], 0.0


@pytest.fixture
def app_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), App)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def notify_config(service_config: dict[str, Any], app_url: str) -> dict[str, Any]:
    return {
        **service_config,
        "GRIDFLOW_FEEDBACK_TICK_S": 3600,  # the tests send by hand
        "GRIDFLOW_REPORTER_WEBHOOK_URL": f"{app_url}/feedback",
        "GRIDFLOW_SMS_GATEWAY": GATEWAY,
        "GRIDFLOW_WEBHOOK_SECRETS": SECRETS,
    }


@pytest.fixture
def notify(run_services: Any, clock: FakeClock, notify_config: dict[str, Any]) -> Any:
    return run_services(NotifyService, clock=clock, config=notify_config)["notify"]


# -- events ------------------------------------------------------------------------------------
def summary(reporter: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "category": "E0402", "category_name": "消防通道堵塞", "description": "消防通道被私家车堵塞",
        "location": {"grid_code": DEMO_CELL, "grid_name": "通工小区"},
        "reporter": reporter or {"kind": "resident", "id": "u-42", "name": "李敏",
                                 "phone": PHONE},
        "reported_at": T0,
    }


def node(tier: str) -> dict[str, Any]:
    cell, _ = REF.grid.cell_for_code(DEMO_CELL)
    return REF.grid.tier_info(cell, tier)


def ev(type_: str, data: dict[str, Any], case_id: str = CASE_ID) -> Event:
    return make_event(type_, case_id, data, producer="test", at=T0)


def routed(reporter: dict[str, Any] | None = None, case_id: str = CASE_ID) -> Event:
    # 消防通道堵塞: fire leads, police and urban_mgmt assist, at the community
    return ev("case.routed", route_with(REF, summary(reporter), T0), case_id)


def progressed(department: str, note: str = "已到场处置") -> Event:
    return ev("assignment.progressed", {"department": department, "note": note, "at": T0})


def publish(uri: str, *events: Event) -> None:
    with kombu.Connection(uri) as conn:
        channel = conn.channel()
        for e in events:
            channel.basic_publish_confirm(
                amqp.Message(e.to_json(), content_type="application/json", delivery_mode=2,
                             message_id=e.event_id, type=e.type,
                             application_headers={"schema_version": 1}),
                exchange=topo.EVENTS_EXCHANGE, routing_key=e.type, mandatory=True)


def handle(notify: Any, uri: str, method: str, *events: Event) -> None:
    """Publish events of one type and wait until ``method`` handled them (one batch or more)."""
    left = Counter(e.event_id for e in events)

    def done(worker_ctx: Any, result: Any, exc_info: Any) -> bool:
        if exc_info is None:
            for e in worker_ctx.args[0]:
                left[e.event_id] -= 1
        return all(n <= 0 for n in left.values())

    with entrypoint_waiter(notify, method, callback=done, timeout=20):
        publish(uri, *events)


def collect(uri: str, queue: str, count: int) -> list[Any]:
    got: list[Any] = []

    def enough() -> bool:
        got.extend(get_messages(uri, queue))
        return len(got) >= count

    wait_for(enough, what=f"{count} messages on {queue}")
    return got


def send(notify: Any) -> dict[str, int]:
    with entrypoint_hook(notify, "send_feedback") as tick:
        return tick()


def feedback_for(notify: Any, case_id: str = CASE_ID) -> list[dict[str, Any]]:
    with entrypoint_hook(notify, "feedback_for") as rpc:
        return rpc(case_id)


def start_case(notify: Any, uri: str, reporter: dict[str, Any] | None = None) -> Event:
    e = routed(reporter)
    handle(notify, uri, "on_routed", e)
    collect(uri, "dispatch.fire", 1)  # the lead's case.assigned, out of the way
    get_messages(uri, "dispatch.police")
    get_messages(uri, "dispatch.urban_mgmt")
    return e


# -- public messages -----------------------------------------------------------------------------


def test_progress_reaches_the_lead_department_only_and_follows_a_reroute(
    notify: Any, rabbit_config: dict
) -> None:
    uri = rabbit_config["AMQP_URI"]
    start_case(notify, uri)

    by_police = progressed("police", "已到场疏导车辆")
    handle(notify, uri, "on_progressed", by_police)
    (msg,) = collect(uri, "dispatch.fire", 1)
    body = message_json(msg)
    assert (msg.properties["type"], msg.delivery_info["routing_key"]) == (
        "case.progress", "fire.case.progress")
    assert msg.properties["message_id"] == message_id(by_police.event_id, "fire", "case.progress")
    assert body["data"]["recipient"] == {"kind": "department", "department": "fire", "tier": None}
    assert body["data"]["progress"]["note"] == "已到场疏导车辆"
    assert body["data"]["case"]["category"] == "E0402"

    # the lead's own progress goes to nobody: the next message fire sees is police's again
    handle(notify, uri, "on_progressed", progressed("fire", "消防车已到场"))
    handle(notify, uri, "on_progressed", progressed("urban_mgmt", "执法队员已到场"))
    (msg,) = collect(uri, "dispatch.fire", 1)
    assert message_json(msg)["data"]["progress"]["department"] == "urban_mgmt"

    # fire returns its lead; routing reroutes it to housing, which leads from now on
    a = route_with(REF, summary(), T0)["assignments"][0] | {"department": "housing"}
    reroute = ev("assignments.added", {
        "reason": "reroute", "requested_by": "routing", "note": "fire returned it",
        "assignments": [a], "replaces": "fire", "case": summary(), "added_at": T0})
    handle(notify, uri, "on_added", reroute)
    (assigned,) = collect(uri, "dispatch.housing", 1)
    assert assigned.properties["type"] == "case.assigned"
    assert message_json(assigned)["data"]["whistle"] is None
    handle(notify, uri, "on_progressed", progressed("police", "交通已疏导"))
    (msg,) = collect(uri, "dispatch.housing", 1)
    assert msg.delivery_info["routing_key"] == "housing.case.progress"
    for q in ("dispatch.fire", "dispatch.police", "dispatch.urban_mgmt"):
        assert get_messages(uri, q) == [], q


def test_progress_before_routing_waits_for_the_routing(notify: Any, rabbit_config: dict) -> None:
    uri = rabbit_config["AMQP_URI"]
    early = progressed("police", "先到一步")
    publish(uri, early)  # RetryLater: no snapshot yet, retried after 1 s
    with entrypoint_waiter(notify, "on_progressed", callback=saw("assignment.progressed"),
                           timeout=20):
        handle(notify, uri, "on_routed", routed())
    msgs = collect(uri, "dispatch.fire", 2)
    assert sorted(m.properties["type"] for m in msgs) == ["case.assigned", "case.progress"]


def test_a_task_reaches_the_grid_worker_on_the_compound_tier(
    notify: Any, rabbit_config: dict
) -> None:
    uri = rabbit_config["AMQP_URI"]
    worker = node("compound")
    created = ev("task.created", {
        "task": {"id": 7, "kind": "verification", "assignee": worker,
                 "due_at": T0 + timedelta(days=1), "note": "请核查消防通道是否畅通"},
        "case": summary(), "at": T0})
    handle(notify, uri, "on_task", created)
    (msg,) = collect(uri, "dispatch.tier.compound", 1)
    assert msg.delivery_info["routing_key"] == f"tier.compound.{DEMO_CELL}.task.assigned"
    assert msg.properties["message_id"] == message_id(
        created.event_id, f"tier.compound.{DEMO_CELL}", "task.assigned")
    data = message_json(msg)["data"]
    recipient = data["recipient"]
    assert (recipient["kind"], recipient["tier"]["tier"], recipient["tier"]["code"],
            recipient["tier"]["role"]) == ("tier", "compound", DEMO_CELL, "owner")
    assert recipient["tier"]["owner"]["name"] == worker["owner"]["name"]
    assert data["task"]["kind"] == "verification"
    assert data["links"] == {"case": f"{notify.config['GRIDFLOW_PUBLIC_URL']}/api/v1/cases/"
                                     f"{CASE_ID}"}


def test_needs_dispatch_reaches_the_tier_owner(notify: Any, rabbit_config: dict) -> None:
    uri = rabbit_config["AMQP_URI"]
    needs = ev("case.needs_dispatch", {
        "returned": {"department": "fire", "role": "lead", "reason_code": "wrong_location",
                     "note": "不在辖区", "at": T0},
        "tier": node("community"), "reason": "no candidate left: dispatch by hand",
        "case": summary(), "at": T0})
    handle(notify, uri, "on_needs_dispatch", needs)
    (msg,) = collect(uri, "dispatch.tier.community", 1)
    assert msg.delivery_info["routing_key"] == f"tier.community.{COMMUNITY}.case.needs_dispatch"
    data = message_json(msg)["data"]
    assert data["returned"]["reason_code"] == "wrong_location"
    assert data["recipient"]["tier"]["role"] == "owner"


# -- reporter feedback -----------------------------------------------------------------------------


def test_feedback_is_retried_until_the_app_takes_it_once_and_texted(
    notify: Any, rabbit_config: dict, clock: FakeClock
) -> None:
    uri = rabbit_config["AMQP_URI"]
    start_case(notify, uri)
    rows = feedback_for(notify)
    assert [(r["channel"], r["type"], r["state"], r["attempts"]) for r in rows] == [
        ("webhook", "case.routed", "pending", 0), ("sms", "case.routed", "pending", 0)]
    assert rows[1]["to"] == "138****0001"

    assert send(notify) == {"sent": 1, "retrying": 1, "failed": 0, "lost_claims": 0}
    hook, sms = feedback_for(notify)
    assert (hook["state"], hook["attempts"], hook["last_error"]) == (
        "pending", 1, "HTTP 503 Service Unavailable")
    assert (sms["state"], sms["attempts"], sms["last_error"]) == ("sent", 1, None)
    assert RecordingSms.sent == [(PHONE, f"【网格反馈】案件{CASE_ID}：受理：您反映的“消防通道堵塞”"
                                         "问题已受理，由区消防救援大队牵头办理。")]

    assert send(notify)["sent"] == 0  # not due before its backoff
    clock.advance(timedelta(seconds=5))
    assert send(notify) == {"sent": 1, "retrying": 0, "failed": 0, "lost_claims": 0}
    assert send(notify)["sent"] == 0
    hook = feedback_for(notify)[0]
    assert (hook["state"], hook["attempts"], hook["sent_at"]) == (
        "sent", 2, (T0 + timedelta(seconds=5)).isoformat())

    posts = [b for _, b, _ in App.received]
    assert len(posts) == 2 and posts[0] == posts[1]  # the same body, the same delivery id
    assert [b["delivery_id"] for b in App.ok()] == [hook["delivery_id"]]
    body = App.ok()[0]
    assert (body["type"], body["case_id"], body["status"]) == ("case.routed", CASE_ID, "open")
    assert body["status_notes"].startswith("受理：")
    assert body["reporter"] == {"kind": "resident", "id": "u-42"}
    assert PHONE not in json.dumps(body)

    # the rest of the case's life
    resolved = ev("case.resolved", {"resolved_at": T0 + timedelta(hours=2)})
    handle(notify, uri, "on_case_changed", resolved)
    closed = ev("case.closed", {"closed_at": T0 + timedelta(hours=3),
                                "rate_until": T0 + timedelta(days=7, hours=3),
                                "follow_up_at": T0 + timedelta(days=3), "grid_code": DEMO_CELL})
    handle(notify, uri, "on_case_changed", closed)
    send(notify)
    clock.advance(timedelta(seconds=5))
    send(notify)
    assert [(r["type"], r["channel"], r["state"]) for r in feedback_for(notify)][2:] == [
        ("case.resolved", "webhook", "sent"), ("case.resolved", "sms", "sent"),
        ("case.closed", "webhook", "sent"), ("case.closed", "sms", "sent")]
    closed_body = next(b for b in App.ok() if b["type"] == "case.closed")
    public = notify.config["GRIDFLOW_PUBLIC_URL"]
    assert closed_body["status"] == "closed"
    assert closed_body["links"]["rating"] == f"{public}/api/v1/cases/{CASE_ID}/rating"
    assert closed_body["rate_until"] == "2026-11-30T04:00:00+00:00"
    assert "2026-11-30 12:00前对办理结果进行评价" in closed_body["status_notes"]
    assert [t for _, t in RecordingSms.sent][1:] == [
        f"【网格反馈】案件{CASE_ID}：处置完毕，待网格员核查。",
        f"【网格反馈】案件{CASE_ID}：{closed_body['status_notes']}"]
    assert Counter(b["delivery_id"] for b in App.ok()).most_common(1)[0][1] == 1


def test_a_redelivered_event_creates_no_second_delivery(
    notify: Any, rabbit_config: dict
) -> None:
    uri = rabbit_config["AMQP_URI"]
    e = start_case(notify, uri)
    handle(notify, uri, "on_routed", e)  # the same event again (same message id)
    assert len(feedback_for(notify)) == 2
    again = progressed("police")
    handle(notify, uri, "on_progressed", again)
    handle(notify, uri, "on_progressed", again)
    assert [r["type"] for r in feedback_for(notify)] == [
        "case.routed", "case.routed", "assignment.progressed", "assignment.progressed"]
    (msg,) = collect(uri, "dispatch.fire", 1)
    assert msg.properties["type"] == "case.progress"
    eventlet.sleep(0.5)
    assert get_messages(uri, "dispatch.fire") == []  # and no second case.progress


def test_attached_reporters_follow_until_detached(
    notify: Any, rabbit_config: dict, app_url: str
) -> None:
    uri = rabbit_config["AMQP_URI"]
    App.mode = "down"  # nothing is taken: only who is written to matters here
    start_case(notify, uri, {"kind": "grid_worker", "id": "gw-1", "name": "邓海燕",
                             "phone": PHONE})
    dup = {"kind": "app", "id": "u-77", "name": "王芳", "phone": DUP_PHONE,
           "webhook_url": f"{app_url}/own/u-77"}
    handle(notify, uri, "on_followers", ev("reporter.attached", {
        "reporter": dup, "report_id": "app-77", "duplicate_case_id": "20261123-000043",
        "at": T0 + timedelta(minutes=5)}))
    handle(notify, uri, "on_case_changed", ev("case.resolved", {"resolved_at": T0}))
    handle(notify, uri, "on_followers", ev("reporter.detached", {
        "reporter": dup, "duplicate_case_id": "20261123-000043",
        "at": T0 + timedelta(minutes=10)}))
    handle(notify, uri, "on_case_changed", ev("case.reopened", {
        "cause": "verification", "reason": "通道仍被占用", "departments": ["fire"], "at": T0}))

    rows = feedback_for(notify)
    assert [(r["type"], r["follower"], r["channel"]) for r in rows] == [
        ("case.routed", "reporter", "webhook"), ("case.routed", "reporter", "sms"),
        ("reporter.attached", "duplicate:20261123-000043", "webhook"),
        ("reporter.attached", "duplicate:20261123-000043", "sms"),
        ("case.resolved", "reporter", "webhook"), ("case.resolved", "reporter", "sms"),
        ("case.resolved", "duplicate:20261123-000043", "webhook"),
        ("case.resolved", "duplicate:20261123-000043", "sms"),
        ("case.reopened", "reporter", "webhook"), ("case.reopened", "reporter", "sms"),
    ]
    send(notify)
    texts = Counter(phone for phone, _ in RecordingSms.sent)
    assert texts == {PHONE: 3, DUP_PHONE: 2}
    own = [b for p, b, _ in App.received if p == "/own/u-77"]
    assert sorted(b["type"] for b in own) == ["case.resolved", "reporter.attached"]
    assert own[0]["reported_as"] == {"case_id": "20261123-000043", "report_id": "app-77"}
    assert {b["type"] for p, b, _ in App.received if p == "/feedback"} == {
        "case.routed", "case.resolved", "case.reopened"}


def test_a_refused_webhook_fails_at_once_and_a_flaky_one_gives_up(
    run_services: Any, clock: FakeClock, notify_config: dict, rabbit_config: dict
) -> None:
    uri = rabbit_config["AMQP_URI"]
    notify = run_services(NotifyService, clock=clock, config={
        **notify_config, "GRIDFLOW_FEEDBACK_MAX_ATTEMPTS": 3})["notify"]
    start_case(notify, uri, {"kind": "resident", "id": "u-1"})  # no phone: webhook only

    App.mode = "gone"
    assert send(notify) == {"sent": 0, "retrying": 0, "failed": 1, "lost_claims": 0}
    (row,) = feedback_for(notify)
    assert (row["state"], row["attempts"], row["last_error"]) == ("failed", 1, "HTTP 410 Gone")

    App.mode = "down"
    handle(notify, uri, "on_case_changed", ev("case.resolved", {"resolved_at": T0}))
    for wait in (0, 5, 30):
        clock.advance(timedelta(seconds=wait))
        send(notify)
    row = feedback_for(notify)[1]
    assert (row["state"], row["attempts"]) == ("failed", 3)
    clock.advance(timedelta(hours=1))
    assert send(notify)["failed"] == 0  # given up: never tried again
    assert len(App.received) == 1 + 3


def test_a_failing_sms_gateway_is_retried(notify: Any, rabbit_config: dict,
                                         clock: FakeClock) -> None:
    uri = rabbit_config["AMQP_URI"]
    App.mode = "down"
    start_case(notify, uri)
    RecordingSms.fail_next = 1
    send(notify)
    sms = feedback_for(notify)[1]
    assert (sms["state"], sms["attempts"]) == ("pending", 1)
    assert sms["last_error"] == "ConnectionError: gateway unavailable for 138****0001"
    clock.advance(timedelta(seconds=5))
    send(notify)
    assert feedback_for(notify)[1]["state"] == "sent"
    assert len(RecordingSms.sent) == 1


def test_the_ticker_sends_feedback_by_itself(
    run_services: Any, clock: FakeClock, notify_config: dict, rabbit_config: dict
) -> None:
    uri = rabbit_config["AMQP_URI"]
    notify = run_services(NotifyService, clock=clock, config={
        **notify_config, "GRIDFLOW_FEEDBACK_TICK_S": 0.1})["notify"]
    start_case(notify, uri)
    wait_for(lambda: RecordingSms.sent, what="the SMS sent by the ticker")
    wait_for(lambda: len(App.received) == 1, what="the first webhook attempt")
    # the failure is recorded (retry due 5 s after it) before the clock moves on, or the
    # retry would be counted from the later time and never fall due
    wait_for(lambda: any(d["channel"] == "webhook" and d["attempts"] == 1
                         for d in feedback_for(notify)), what="the failed attempt recorded")
    clock.advance(timedelta(seconds=5))
    wait_for(lambda: App.ok(), what="the webhook retried by the ticker")


# -- signed webhooks, masked logs ------------------------------------------------------------------


def _post_again(url: str, headers: dict[str, str], raw: bytes) -> int:
    """Replay a captured request byte for byte; the status the app answers."""
    keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
    req = urllib.request.Request(url, data=raw, headers=keep, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_webhooks_are_signed_and_a_replay_outside_the_window_is_refused(
    notify: Any, rabbit_config: dict, app_url: str
) -> None:
    uri = rabbit_config["AMQP_URI"]
    App.mode = "gone"  # the first POST is taken (and verified), answered 410: one attempt
    start_case(notify, uri)
    send(notify)
    assert App.refused == []
    ((headers, raw),) = App.raw
    signature = headers["X-Gridflow-Signature"]
    t = int(signature.split(",")[0].removeprefix("t="))
    assert abs(t - time.time()) < 60  # the wall clock, not the service's fake clock
    assert signature.count("v1=") == 2  # one per configured secret
    assert headers["X-Gridflow-Delivery"] == json.loads(raw)["delivery_id"]

    # the app verifies with either secret, and gets the JSON body back
    body = verify_request(["whsec-new"], headers, raw, now=t)
    assert (body["type"], body["case_id"]) == ("case.routed", CASE_ID)
    # the same request 301 s later is refused: captured traffic cannot be replayed
    with pytest.raises(WebhookSignatureError, match="too old"):
        verify_request(["whsec-new", "whsec-old"], headers, raw, now=t + 301)
    App.clock_ahead_s = 301 + (time.time() - t)
    assert _post_again(f"{app_url}/feedback", headers, raw) == 401
    assert App.refused[-1].startswith("timestamp too old")
    # and a request with the body changed is refused however fresh
    App.clock_ahead_s = 0.0
    forged = raw.replace(b'"open"', b'"closed"')
    assert forged != raw
    assert _post_again(f"{app_url}/feedback", headers, forged) == 401
    assert App.refused[-1].startswith("no signature matches")
    assert len(App.raw) == 1


def test_without_secrets_configured_a_key_file_signs_and_logs_mask_reporters(
    run_services: Any, clock: FakeClock, notify_config: dict, rabbit_config: dict,
    service_config: dict
) -> None:
    """The demo's setting: no GRIDFLOW_WEBHOOK_SECRETS, the ``log`` SMS gateway. Every log
    line notify writes, as JSON lines, carries no full phone and no reporter name."""
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Lines(level=logging.INFO)
    handler.setFormatter(JsonFormatter("notify"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        config = {k: v for k, v in notify_config.items() if k != "GRIDFLOW_WEBHOOK_SECRETS"}
        notify = run_services(NotifyService, clock=clock, config={
            **config, "GRIDFLOW_SMS_GATEWAY": "log"})["notify"]
        key_file = Path(service_config["GRIDFLOW_VAR_DIR"]) / "secrets" / "webhook.key"
        App.secrets = [key_file.read_text().strip()]
        uri = rabbit_config["AMQP_URI"]
        App.mode = "gone"
        start_case(notify, uri, {"kind": "resident", "id": "u-42", "name": "李敏",
                                 "phone": PHONE})
        assert send(notify) == {"sent": 1, "retrying": 0, "failed": 1, "lost_claims": 0}
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert App.refused == [] and len(App.raw) == 1  # signed with the key file's secret
    logged = [json.loads(line) for line in lines]
    started = next(r for r in logged if r["msg"] == "webhooks are signed")
    assert started["secrets_from"] == str(key_file)
    (sms,) = [r for r in logged if r["msg"].startswith("sms (not sent")]
    assert sms["to"] == "138****0001"
    assert {r["to"] for r in logged if r["msg"] == "feedback sent"} == {"138****0001"}
    text = "\n".join(lines)
    assert PHONE not in text and "李敏" not in text and App.secrets[0] not in text


# -- the sender's claims, two senders at once ------------------------------------------------------
class SlowHook(WebhookClient):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[str] = []

    def post(self, url: str, body: dict[str, Any]) -> fb.Outcome:
        eventlet.sleep(0.001)
        self.got.append(body["delivery_id"])
        return fb.SENT_OK


def test_two_senders_send_each_delivery_exactly_once(
    database_url: str | None, tmp_path: Path
) -> None:
    from sqlalchemy.orm import sessionmaker

    url = service_database_url("notify", database_url, tmp_path)
    engines = [make_engine(url, schema="notify")]
    create_tables(engines[0], Base.metadata)
    if is_postgres(engines[0]):  # a second instance, with its own connections
        engines.append(make_engine(url, schema="notify"))
    else:  # SQLite: one process, one writer; the two senders share it
        engines.append(engines[0])
    sessions = [sessionmaker(e, expire_on_commit=False) for e in engines]
    count = 400
    with sessions[0]() as s, s.begin():
        for i in range(count):
            add_messages(s, f"c-{i % 7}", "case.resolved", f"ev-{i}", [fb.FeedbackMessage(
                f"d-{i}", "reporter", fb.WEBHOOK, "http://app.invalid/x",
                {"delivery_id": f"d-{i}"})], T0)
    hooks = [SlowHook(), SlowHook()]
    senders = [FeedbackSender(sessions[i], webhook=hooks[i], sms=RecordingSms(),
                              skip_locked=is_postgres(engines[i]), batch=25) for i in range(2)]

    def drain(sender: FeedbackSender) -> int:
        n = 0
        while (r := sender.run_once(lambda: T0)).claimed:
            n += r.sent
        return n

    sent = [t.wait() for t in [eventlet.spawn(drain, s) for s in senders]]
    assert sum(sent) == count
    if database_url:  # SKIP LOCKED shares the work
        assert min(sent) > 0, sent
    got = hooks[0].got + hooks[1].got
    assert len(got) == len(set(got)) == count
    with sessions[0]() as s:
        states = dict(s.execute(select(FeedbackDelivery.state, func.count())
                                .group_by(FeedbackDelivery.state)).all())
        assert states == {"sent": count}
        assert s.scalar(select(func.max(FeedbackDelivery.attempts))) == 1
    for e in set(engines):
        e.dispose()
