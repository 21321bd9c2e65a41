"""Reporter feedback (反馈), the pure parts: which events are told with which notes, who
follows a case, the messages per channel, their ids, phone masking, the retry schedule, and
the channel adapters on their own."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.notify import feedback as fb
from services.notify.channels import (
    LoggingSmsGateway,
    PermanentFailure,
    SmsGateway,
    WebhookClient,
    load_sms_gateway,
    send_sms,
)

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
CASE_ID = "20261123-000001"
PUBLIC_URL = "https://gridflow.example.gov.cn"
SOURCE = "3f1e6f0a-0000-4000-8000-000000000001"
DEFAULT_HOOK = "https://app.example.com/gridflow/feedback"
NAMES = {"fire": "区消防救援大队", "police": "区公安分局（辖区派出所）"}
SHANGHAI = ZoneInfo("Asia/Shanghai")

REPORTER = {"kind": "resident", "id": "u-42", "name": "李敏", "phone": "13800000001",
            "webhook_url": None}
DUP_REPORTER = {"kind": "app", "id": "u-77", "name": "王芳", "phone": "13900000002",
                "webhook_url": "https://own.example.com/hook?token=s3cret"}


def ctx(**kw: Any) -> fb.CaseContext:
    base: dict[str, Any] = {"case_id": CASE_ID, "public_url": PUBLIC_URL,
                            "category_name": "消防通道堵塞", "lead": "fire",
                            "department_names": NAMES, "tz": SHANGHAI}
    return fb.CaseContext(**(base | kw))


def change(type_: str, data: dict[str, Any], **kw: Any) -> fb.Change:
    out = fb.change_for(type_, data, ctx(**kw), T0)
    assert out is not None
    return out


CLOSED = {"closed_at": T0 + timedelta(days=1), "rate_until": T0 + timedelta(days=8),
          "follow_up_at": T0 + timedelta(days=4), "grid_code": "511802001001101"}


# -- which events, which notes -----------------------------------------------------------------


def test_routed_says_accepted_and_who_leads():
    c = change("case.routed", {"routed_at": T0 + timedelta(seconds=1)})
    assert c.notes == "受理：您反映的“消防通道堵塞”问题已受理，由区消防救援大队牵头办理。"
    assert (c.status, c.at, c.rate_until) == ("open", T0 + timedelta(seconds=1), None)
    assert c.links == {"case": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}"}


def test_routed_without_a_lead_or_category_name_still_reads_well():
    c = change("case.routed", {}, lead=None, category_name="")
    assert c.notes == "受理：您反映的问题已受理，正在派单办理。"
    assert c.at == T0  # no time of its own: the event's


def test_an_unknown_department_is_named_by_its_code():
    assert "由gas牵头办理" in change("case.routed", {}, lead="gas").notes


def test_progress_carries_the_departments_note():
    c = change("assignment.progressed", {"department": "police", "note": "已到场疏导车辆",
                                         "at": T0})
    assert c.notes == "进展：区公安分局（辖区派出所）：已到场疏导车辆"
    assert c.status == "open"


def test_a_long_progress_note_is_whole_in_the_webhook_and_clipped_in_the_sms():
    note = "现场" * 200
    c = change("assignment.progressed", {"department": "fire", "note": note, "at": T0})
    assert c.notes.endswith(note)
    assert len(c.sms) < 100 and c.sms.endswith("…")


def test_resolved_waits_for_the_grid_workers_check():
    c = change("case.resolved", {"resolved_at": T0})
    assert c.notes == "处置完毕，待网格员核查。"
    assert c.status == "open"


def test_closed_invites_a_rating_until_the_window_ends_with_the_link():
    c = change("case.closed", CLOSED)
    rating = f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}/rating"
    assert c.status == "closed"
    assert c.rate_until == T0 + timedelta(days=8)
    assert c.at == CLOSED["closed_at"]
    assert c.links == {"case": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}", "rating": rating}
    # 2026-12-01 01:00 UTC is 09:00 in 雨城区
    assert c.notes == f"已办结。欢迎您在2026-12-01 09:00前对办理结果进行评价：{rating}"
    assert c.sms == c.notes


def test_reopened_says_rework_and_why():
    c = change("case.reopened", {"cause": "rating", "reason": "reporter unsatisfied (1/5)",
                                 "departments": ["fire"], "at": T0})
    assert c.notes == "返工：reporter unsatisfied (1/5)。已重新交办处理。"
    assert c.status == "open"


def test_attached_tells_the_duplicates_reporter_it_was_merged():
    c = change("reporter.attached", {"at": T0})
    assert c.notes.startswith(f"受理：您反映的问题与案件{CASE_ID}为同一问题，已合并办理")


@pytest.mark.parametrize("type_", ["case.escalated", "case.reminded", "task.created",
                                   "case.needs_dispatch", "reporter.detached",
                                   "assignments.added", "case.tier_changed"])
def test_other_events_tell_the_reporter_nothing(type_):
    assert fb.change_for(type_, {}, ctx(), T0) is None


def test_feedback_events_are_the_ones_with_notes():
    told = {t for t in fb.FEEDBACK_EVENTS
            if fb.change_for(t, {"department": "fire", "note": "x", "reason": "y", **CLOSED},
                             ctx(), T0)}
    assert told == set(fb.FEEDBACK_EVENTS)


def test_only_closed_is_closed():
    statuses = {t: change(t, {"department": "fire", "note": "x", "reason": "y", **CLOSED}).status
                for t in fb.FEEDBACK_EVENTS}
    assert statuses == {t: ("closed" if t == "case.closed" else "open")
                        for t in fb.FEEDBACK_EVENTS}


# -- followers -----------------------------------------------------------------------------------


def test_the_original_reporter_follows_from_routing():
    f = fb.original(REPORTER, T0)
    assert (f.key, f.active, f.duplicate_case_id) == ("reporter", True, None)


def test_an_attached_duplicate_follows_until_detached():
    f = fb.attach(None, DUP_REPORTER, "r-2", "20261123-000002", T0)
    assert (f.key, f.active, f.report_id) == ("duplicate:20261123-000002", True, "r-2")
    gone = fb.detach(f, DUP_REPORTER, "20261123-000002", T0 + timedelta(hours=1))
    assert not gone.active
    again = fb.attach(gone, DUP_REPORTER, "r-2", "20261123-000002", T0 + timedelta(hours=2))
    assert again.active


def test_a_detach_that_overtook_its_attach_keeps_the_follower_detached():
    gone = fb.detach(None, DUP_REPORTER, "20261123-000002", T0 + timedelta(hours=1))
    assert not gone.active and gone.reporter["id"] == "u-77"
    late = fb.attach(gone, DUP_REPORTER, "r-2", "20261123-000002", T0)
    assert not late.active


def test_a_repeated_older_attach_does_not_move_since_back():
    f = fb.attach(None, DUP_REPORTER, "r-2", "d", T0 + timedelta(hours=2))
    assert fb.attach(f, DUP_REPORTER, "r-2", "d", T0).since == T0 + timedelta(hours=2)


# -- messages ------------------------------------------------------------------------------------


def followers() -> list[fb.Follower]:
    return [fb.attach(None, DUP_REPORTER, "r-2", "20261123-000002", T0),
            fb.original(REPORTER, T0)]


def test_each_active_follower_gets_a_webhook_and_an_sms_original_first():
    msgs = fb.messages_for(change("case.resolved", {}), followers(), SOURCE, DEFAULT_HOOK)
    assert [(m.follower, m.channel, m.address) for m in msgs] == [
        ("reporter", "webhook", DEFAULT_HOOK),
        ("reporter", "sms", "13800000001"),
        ("duplicate:20261123-000002", "webhook", DUP_REPORTER["webhook_url"]),
        ("duplicate:20261123-000002", "sms", "13900000002"),
    ]
    assert len({m.delivery_id for m in msgs}) == 4


def test_without_a_default_webhook_only_reporters_with_their_own_get_one():
    msgs = fb.messages_for(change("case.resolved", {}), followers(), SOURCE, None)
    assert [(m.follower, m.channel) for m in msgs] == [
        ("reporter", "sms"), ("duplicate:20261123-000002", "webhook"),
        ("duplicate:20261123-000002", "sms")]


def test_a_reporter_without_phone_or_webhook_gets_nothing():
    quiet = fb.original({"kind": "hotline", "id": "", "phone": ""}, T0)
    assert fb.messages_for(change("case.resolved", {}), [quiet], SOURCE, None) == []


def test_a_detached_follower_gets_nothing():
    gone = fb.detach(followers()[0], DUP_REPORTER, "20261123-000002", T0 + timedelta(hours=1))
    msgs = fb.messages_for(change("case.resolved", {}), [gone], SOURCE, DEFAULT_HOOK)
    assert msgs == []


def test_one_phone_shared_by_two_followers_gets_one_sms():
    same = fb.attach(None, REPORTER | {"phone": "138-0000-0001"}, "r-3", "d3", T0)
    msgs = fb.messages_for(change("case.resolved", {}), [fb.original(REPORTER, T0), same],
                           SOURCE, None)
    assert [(m.follower, m.channel) for m in msgs] == [("reporter", "sms")]


def test_delivery_ids_are_stable_per_event_follower_and_channel():
    a = fb.messages_for(change("case.resolved", {}), followers(), SOURCE, DEFAULT_HOOK)
    b = fb.messages_for(change("case.resolved", {}), followers(), SOURCE, DEFAULT_HOOK)
    assert [m.delivery_id for m in a] == [m.delivery_id for m in b]
    other = fb.messages_for(change("case.resolved", {}), followers(), str(uuid.uuid4()),
                            DEFAULT_HOOK)
    assert not {m.delivery_id for m in a} & {m.delivery_id for m in other}
    assert fb.delivery_id("ev-1", "reporter", "webhook") == fb.delivery_id(
        "ev-1", "reporter", "webhook")
    assert uuid.UUID(fb.delivery_id("ev-1", "reporter", "webhook")).version == 5


def test_the_webhook_body_is_open311_like_and_carries_no_name_or_phone():
    msgs = fb.messages_for(change("case.closed", CLOSED), followers(), SOURCE, DEFAULT_HOOK)
    body = msgs[0].body
    assert body == {
        "delivery_id": msgs[0].delivery_id,
        "schema_version": 1,
        "type": "case.closed",
        "case_id": CASE_ID,
        "status": "closed",
        "status_notes": change("case.closed", CLOSED).notes,
        "at": "2026-11-24T01:00:00+00:00",
        "rate_until": "2026-12-01T01:00:00+00:00",
        "links": {"case": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}",
                  "rating": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}/rating"},
        "reporter": {"kind": "resident", "id": "u-42"},
        "reported_as": None,
    }
    json.dumps(body)  # plain JSON
    dup = msgs[2].body
    assert dup["reported_as"] == {"case_id": "20261123-000002", "report_id": "r-2"}
    text = json.dumps([m.body for m in msgs if m.channel == "webhook"], ensure_ascii=False)
    assert "13800000001" not in text and "李敏" not in text and "王芳" not in text


def test_the_sms_is_signed_and_names_the_case():
    msgs = fb.messages_for(change("case.resolved", {}), followers(), SOURCE, None)
    sms = next(m for m in msgs if m.channel == "sms")
    assert sms.body == {"phone": "13800000001",
                        "text": f"【网格反馈】案件{CASE_ID}：处置完毕，待网格员核查。"}


# -- outcomes and the retry schedule ---------------------------------------------------------------


def test_backoff_grows_then_stays_at_its_longest():
    assert [fb.backoff(n).total_seconds() for n in range(1, 6)] == [5, 30, 120, 600, 1800]
    assert fb.backoff(50) == fb.backoff(len(fb.BACKOFF_S))
    assert fb.backoff(0) == timedelta(seconds=5)


@pytest.mark.parametrize(("status", "ok", "permanent"), [
    (200, True, False), (202, True, False), (204, True, False),
    (400, False, True), (401, False, True), (404, False, True), (410, False, True),
    (408, False, False), (429, False, False), (500, False, False), (503, False, False),
    (301, False, False),
])
def test_http_statuses(status, ok, permanent):
    out = fb.http_outcome(status)
    assert (out.ok, out.permanent) == (ok, permanent)


def test_a_success_is_sent_now():
    nxt = fb.after_attempt(fb.SENT_OK, 3, T0)
    assert (nxt.state, nxt.sent_at, nxt.next_attempt_at, nxt.last_error) == ("sent", T0, None,
                                                                              None)


def test_a_failure_is_retried_on_the_schedule():
    nxt = fb.after_attempt(fb.Outcome(False, "HTTP 503"), 1, T0)
    assert (nxt.state, nxt.next_attempt_at, nxt.last_error) == (
        "pending", T0 + timedelta(seconds=5), "HTTP 503")
    assert fb.after_attempt(fb.Outcome(False, "x"), 2, T0).next_attempt_at == T0 + timedelta(
        seconds=30)


def test_a_permanent_failure_or_the_last_attempt_gives_up():
    assert fb.after_attempt(fb.Outcome(False, "HTTP 410", permanent=True), 1, T0).state == "failed"
    assert fb.after_attempt(fb.Outcome(False, "HTTP 503"), 10, T0, max_attempts=10).state == (
        "failed")
    assert fb.after_attempt(fb.Outcome(False, "HTTP 503"), 9, T0, max_attempts=10).state == (
        "pending")


def test_an_error_naming_a_phone_is_stored_masked():
    nxt = fb.after_attempt(fb.Outcome(False, "gateway refused 13800000001"), 1, T0)
    assert nxt.last_error == "gateway refused 138****0001"


# -- personal data -------------------------------------------------------------------------------


@pytest.mark.parametrize(("phone", "masked"), [
    ("13800000001", "138****0001"),
    ("138 0000 0001", "138****0001"),
    ("+8613800000001", "+86138****0001"),
    ("02888881234", "*******1234"),  # not a mobile: at most the last 4 digits
    ("12345", "***45"),
    ("12", "**"),
    ("", ""),
])
def test_phones_are_masked(phone, masked):
    assert fb.mask_phone(phone) == masked


def test_phones_in_free_text_are_masked():
    assert fb.mask_text("call 13800000001 or 13900000002") == "call 138****0001 or 139****0002"
    assert fb.mask_text("HTTP 503 Service Unavailable") == "HTTP 503 Service Unavailable"


def test_addresses_for_logs_hide_the_phone_and_the_webhooks_path():
    assert fb.mask_address("sms", "13800000001") == "138****0001"
    assert fb.mask_address("webhook", "https://own.example.com/hook?token=s3cret") == (
        "https://own.example.com")
    assert fb.mask_address("webhook", "http://127.0.0.1:9000/x") == "http://127.0.0.1:9000"


# -- the adapters --------------------------------------------------------------------------------


class Recording:
    sent: list[tuple[str, str]] = []

    def send(self, phone: str, text: str) -> None:
        self.sent.append((phone, text))


class Broken:
    def send(self, phone: str, text: str) -> None:
        raise RuntimeError(f"no route to {phone}")


class Invalid:
    def send(self, phone: str, text: str) -> None:
        raise PermanentFailure("not a mobile number")


def test_the_default_gateway_logs_the_text_with_the_phone_masked(caplog):
    gateway = load_sms_gateway(None)
    assert isinstance(gateway, LoggingSmsGateway) and isinstance(gateway, SmsGateway)
    assert isinstance(load_sms_gateway("log"), LoggingSmsGateway)
    with caplog.at_level(logging.INFO, logger="services.notify.channels"):
        gateway.send("13800000001", "案件X：处置完毕")
    (record,) = caplog.records
    assert record.to == "138****0001"
    assert "13800000001" not in caplog.text


def test_a_gateway_is_chosen_by_import_path():
    assert isinstance(load_sms_gateway(f"{__name__}:Recording"), Recording)


@pytest.mark.parametrize("spec", ["nonsense", "json:", ":Recording", "json:dumps"])
def test_a_bad_gateway_setting_fails_at_start(spec):
    with pytest.raises((ValueError, TypeError, AttributeError)):
        load_sms_gateway(spec)


def test_sms_outcomes():
    assert send_sms(Recording(), "13800000001", "x").ok
    broken = send_sms(Broken(), "13800000001", "x")
    assert not broken.ok and not broken.permanent and "RuntimeError" in broken.error
    invalid = send_sms(Invalid(), "1", "x")
    assert not invalid.ok and invalid.permanent


class _Hook(BaseHTTPRequestHandler):
    statuses: list[int] = []
    bodies: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.bodies.append((self.path, json.loads(self.rfile.read(length)), dict(self.headers)))
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        if 300 <= status < 400:
            self.send_header("Location", "http://example.com/")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook():
    _Hook.statuses, _Hook.bodies = [], []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_webhook_client_posts_json_with_the_delivery_id(hook):
    out = WebhookClient().post(f"{hook}/feedback?k=1", {"delivery_id": "d-1", "status": "开"})
    assert out.ok
    ((path, body, headers),) = _Hook.bodies
    assert path == "/feedback?k=1"
    assert body == {"delivery_id": "d-1", "status": "开"}
    assert headers["X-Gridflow-Delivery"] == "d-1"
    assert headers["Content-Type"].startswith("application/json")


def test_the_webhook_client_reports_statuses_and_does_not_follow_redirects(hook):
    _Hook.statuses = [503, 404, 302]
    client = WebhookClient()
    first, second, third = (client.post(f"{hook}/x", {"delivery_id": "d"}) for _ in range(3))
    assert (first.ok, first.permanent, first.error) == (False, False,
                                                        "HTTP 503 Service Unavailable")
    assert (second.ok, second.permanent) == (False, True)
    assert (third.ok, third.permanent) == (False, False)
    assert len(_Hook.bodies) == 3


def test_an_unreachable_webhook_is_retried_and_its_error_hides_the_path():
    from nameko.testing.utils import find_free_port

    url = f"http://127.0.0.1:{find_free_port()}/hook/s3cret-token"
    out = WebhookClient(timeout_s=2).post(url, {"delivery_id": "d"})
    assert not out.ok and not out.permanent
    assert "s3cret" not in out.error


def test_a_webhook_that_is_not_http_fails_for_good():
    out = WebhookClient().post("ftp://example.com/x", {})
    assert (out.ok, out.permanent) == (False, True)
