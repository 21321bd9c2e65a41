"""分级响应 over the real broker and databases: whistles, pauses, extensions, rework, the
supervision ledger, the auditor and the restart catch-up. The four services run in this
process on one fake clock; the escalation clock is ticked by the tests."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from services.escalation.service import EscalationService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared.clock import FakeClock
from support import case_view, get_messages, message_json, report, saw, start_services, wait_for

ALL = (IntakeService, RoutingService, EscalationService, NotifyService)
COMMUNITY = {"name": "胡涛", "tier": "community", "code": "511802001001"}  # 桐梓林社区
STREET = {"name": "黄国平", "tier": "street", "code": "511802001"}  # 青江街道
COMPOUND = {"name": "邓海燕", "tier": "compound", "code": "511802001001101"}  # 通工小区


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # Monday 2026-11-23 09:00 in 雨城区


@pytest.fixture
def system(run_services: Any, clock: FakeClock) -> dict:
    return run_services(*ALL, clock=clock)


def _until(api: Any, case_id: str, ok: Callable[[dict[str, Any]], bool], what: str) -> dict:
    return wait_for(lambda: (lambda c: c if ok(c) else None)(case_view(api, case_id)), what=what)


def _assignment(case: dict[str, Any], department: str) -> dict[str, Any]:
    return next(a for a in case["assignments"] if a["department"] == department)


def _kinds(case: dict[str, Any]) -> list[str]:
    return [t["kind"] for t in case["timeline"]]


def _newcase_view(api: Any, report_id: str, category: str = "E0101", **extra: Any) -> str:
    r = api.post("/api/v1/reports", json=report(report_id, category, **extra))
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    _until(api, case_id, lambda c: c["state"] == "dispatched", "dispatch")
    return case_id


def _tick(system: dict) -> int:
    with entrypoint_hook(system["escalation"], "tick") as tick:
        return tick()


def _act(system: dict, api: Any, url: str, body: dict, event_type: str, method: str) -> dict:
    """POST an action and wait until escalation has handled the event it causes."""
    with entrypoint_waiter(system["escalation"], method, callback=saw(event_type)):
        r = api.post(url, json=body)
        assert r.status_code == 200, r.text
    return r.json()


def _ack(system: dict, api: Any, case_id: str, department: str) -> dict:
    return _act(system, api, f"/api/v1/cases/{case_id}/assignments/{department}/ack", {},
                "assignment.acknowledged", "on_stopped")


def _collect(amqp: str, queue: str, count: int) -> list[Any]:
    """Wait until ``count`` messages arrived on ``queue``; take them."""
    got: list[Any] = []

    def enough() -> bool:
        got.extend(get_messages(amqp, queue))
        return len(got) >= count

    wait_for(enough, what=f"{count} messages on {queue}")
    return got


def _drain(amqp: str, *queues: str) -> None:
    for q in queues:
        get_messages(amqp, q)


# -- whistles (吹哨报到) --------------------------------------------------------------------------


def test_whistle_summons_departments_who_get_a_dispatch_and_a_report_in_clock(
    system: dict, api: Any, rabbit_config: dict, clock: FakeClock
) -> None:
    amqp = rabbit_config["AMQP_URI"]
    case_id = _newcase_view(api, "w-1")  # 暴露垃圾: sanitation alone, at the compound
    _drain(amqp, "dispatch.sanitation")
    base = f"/api/v1/cases/{case_id}"
    _ack(system, api, case_id, "sanitation")

    clock.advance(timedelta(minutes=5))
    r = api.post(f"{base}/whistle", json={
        "level": "routine", "departments": ["urban_mgmt", "sanitation"], "by": COMMUNITY,
        "reason": "垃圾堆占压消防通道，需执法介入",
    })
    assert r.status_code == 202, r.text
    case = _until(api, case_id, lambda c: any(
        a["department"] == "urban_mgmt" and a["state"] == "dispatched"
        for a in c["assignments"]), "the summoned department dispatched")
    summoned = _assignment(case, "urban_mgmt")
    assert summoned["role"] == "summoned"
    assert summoned["deadlines"]["report_in"] == "2026-11-23T01:35:00+00:00"  # 30 min from 09:05
    assert _assignment(case, "sanitation")["role"] == "lead"  # already there: unchanged
    kinds = _kinds(case)
    assert kinds.index("whistled") < kinds.index("summoned")
    whistled = next(t for t in case["timeline"] if t["kind"] == "whistled")
    assert whistled["actor"] == "community:511802001001:胡涛"

    [assigned] = wait_for(lambda: get_messages(amqp, "dispatch.urban_mgmt"), what="dispatch")
    body = message_json(assigned)
    assert assigned.properties["type"] == "case.assigned"
    assert body["data"]["whistle"]["level"] == "routine"
    assert body["data"]["whistle"]["by"]["name"] == "胡涛"
    assert body["data"]["assignment"]["role"] == "summoned"
    [told] = wait_for(lambda: get_messages(amqp, "dispatch.sanitation"), what="whistle notice")
    assert told.properties["type"] == "case.whistled"
    assert message_json(told)["data"]["departments"] == ["urban_mgmt", "sanitation"]

    # the summoned department misses its report-in: the case escalates for it alone
    clock.advance(timedelta(minutes=31))
    assert _tick(system) == 1
    case = _until(api, case_id, lambda c: c["escalations"] == 1, "escalation")
    entry = next(t for t in case["timeline"] if t["kind"] == "escalated")
    assert entry["reason"].startswith("report_in_missed: urban_mgmt (report_in)")
    assert case["tier"] == "area"


def test_hard_whistle_puts_the_case_under_the_district_leadership(
    system: dict, api: Any, rabbit_config: dict
) -> None:
    amqp = rabbit_config["AMQP_URI"]
    case_id = _newcase_view(api, "w-2")
    r = api.post(f"/api/v1/cases/{case_id}/whistle", json={
        "level": "hard", "departments": ["housing"], "by": STREET})
    assert r.status_code == 202, r.text
    case = _until(api, case_id, lambda c: c["tier"] == "district", "raised to the district")
    assert case["tier_code"] == "511802"
    assert "tier_changed" in _kinds(case)
    [leadership] = wait_for(lambda: get_messages(amqp, "dispatch.tier.district"), what="notice")
    body = message_json(leadership)
    assert leadership.delivery_info["routing_key"] == "tier.district.511802.case.whistled"
    assert body["data"]["recipient"]["tier"]["owner"]["name"] == "张建国"
    assert body["data"]["whistle"]["level"] == "hard"
    [assigned] = wait_for(lambda: get_messages(amqp, "dispatch.housing"), what="dispatch")
    assert message_json(assigned)["data"]["tier"]["tier"] == "district"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"level": "routine", "departments": ["police"], "by": COMPOUND}, 409, "state"),
        ({"level": "routine", "departments": ["police"],
          "by": {**COMMUNITY, "code": "511802001002"}}, 409, "state"),  # another community
        ({"level": "routine", "departments": ["no_such_dept"], "by": COMMUNITY}, 422,
         "departments"),
        ({"level": "loud", "departments": ["police"], "by": COMMUNITY}, 422, "level"),
        ({"level": "routine", "departments": [], "by": COMMUNITY}, 422, "departments"),
        ({"level": "routine", "departments": ["police"]}, 422, "by"),
        ({"level": "routine", "departments": ["police"], "by": {"name": "x", "tier": "street"}},
         422, "by"),
    ],
)
def test_a_whistle_from_the_wrong_place_or_malformed_is_refused_and_leaves_no_trace(
    system: dict, api: Any, body: dict, status: int, field: str
) -> None:
    case_id = _newcase_view(api, "w-3")
    before = case_view(api, case_id)
    r = api.post(f"/api/v1/cases/{case_id}/whistle", json=body)
    assert r.status_code == status, r.text
    assert field in r.json()["errors"]
    assert case_view(api, case_id)["timeline"] == before["timeline"]


# -- pause (缓办) and extension (延期) ------------------------------------------------------------


def test_a_pause_stops_counting_and_resume_gives_back_the_working_time_left(
    system: dict, api: Any, clock: FakeClock
) -> None:
    case_id = _newcase_view(api, "p-1")  # resolve 4 working hours from Mon 09:00: Mon 15:00
    base = f"/api/v1/cases/{case_id}/assignments/sanitation"
    clock.advance(timedelta(minutes=10))
    _ack(system, api, case_id, "sanitation")
    assert api.post(f"{base}/pause", json={}).status_code == 422  # a reason is required
    assert api.post(f"{base}/resume", json={}).status_code == 409  # not paused

    clock.advance(timedelta(minutes=50))  # Mon 10:00: 3 working hours left (10–12, 14–15)
    case = _act(system, api, f"{base}/pause", {"reason": "等待业主委员会协调清运时间"},
                "assignment.paused", "on_paused")
    assert _assignment(case, "sanitation")["paused"]["reason"] == "等待业主委员会协调清运时间"
    assert api.post(f"{base}/pause", json={"reason": "again"}).status_code == 409
    case = _until(api, case_id, lambda c: _assignment(c, "sanitation")["deadlines"]["resolve"]
                  is None, "the paused deadline")

    clock.advance(timedelta(days=1))  # Tue 10:00: long past Mon 15:00, but paused
    assert _tick(system) == 0
    clock.advance(timedelta(hours=-1))  # Tue 09:00
    _act(system, api, f"{base}/resume", {"actor": "环卫所"}, "assignment.resumed", "on_resumed")
    case = _until(api, case_id, lambda c: _assignment(c, "sanitation")["deadlines"]["resolve"]
                  is not None, "the resumed deadline")
    assert _assignment(case, "sanitation")["deadlines"]["resolve"] == "2026-11-24T04:00:00+00:00"
    assert _assignment(case, "sanitation")["paused"] is None
    resumed = next(t for t in case["timeline"] if t["kind"] == "resumed")
    assert resumed["reason"] == "sanitation goes on after 23h00m"

    clock.advance(timedelta(hours=2, minutes=59))
    assert _tick(system) == 0
    clock.advance(timedelta(minutes=2))  # Tue 12:01
    assert _tick(system) == 1


def test_an_extension_is_decided_by_the_tier_above_and_closes_the_supervision_item(
    system: dict, api: Any, clock: FakeClock
) -> None:
    case_id = _newcase_view(api, "x-1")
    base = f"/api/v1/cases/{case_id}"
    _ack(system, api, case_id, "sanitation")
    clock.advance(timedelta(hours=6, minutes=1))  # Mon 15:01: the resolve deadline passed
    assert _tick(system) == 1
    _until(api, case_id, lambda c: "supervision_opened" in _kinds(c), "supervision")
    ledger = api.get("/api/v1/supervision", params={"state": "open"}).json()
    [item] = ledger["items"]
    assert (item["department"], item["kind"], item["tier"]) == ("sanitation", "resolve", "area")
    assert item["owner"]["name"] == "梁雅琴" and item["late_by_s"] == 60.0

    r = api.post(f"{base}/assignments/sanitation/extensions",
                 json={"extend_by": "1wd", "reason": "需更换破损垃圾房，材料明日到"})
    assert r.status_code == 201, r.text
    ext = r.json()["extension"]
    assert (ext["state"], ext["extend_by"]) == ("pending", "1wd")
    assert api.post(f"{base}/assignments/sanitation/extensions",
                    json={"extend_by": "1wd", "reason": "again"}).status_code == 409
    bad = api.post(f"{base}/assignments/sanitation/extensions",
                   json={"extend_by": "forever", "reason": "x"})
    assert bad.status_code == 422 and "extend_by" in bad.json()["errors"]

    decision = f"{base}/extensions/{ext['id']}/decision"
    area = {"name": "梁雅琴", "tier": "area", "code": "5118020010011"}
    r = api.post(decision, json={"approved": True, "by": area})  # the case is at the area now
    assert r.status_code == 409 and "above" in r.json()["errors"]["state"][0]
    r = api.post(decision, json={"approved": True, "by": COMMUNITY, "note": "同意"})
    assert r.status_code == 200, r.text
    assert api.post(decision, json={"approved": False, "by": COMMUNITY}).status_code == 409
    assert api.post(f"{base}/extensions/999/decision",
                    json={"approved": True, "by": COMMUNITY}).status_code == 404

    case = _until(api, case_id, lambda c: "supervision_closed" in _kinds(c), "item closed")
    assert case["extensions"][0]["state"] == "approved"
    closed = api.get("/api/v1/supervision", params={"state": "closed"}).json()["items"]
    assert [i["close_reason"] for i in closed] == ["extension approved"]
    # the area step gave 4 working hours from Mon 15:01 (Tue 10:01); one working day more
    case = _until(api, case_id, lambda c: any(t["kind"] == "rescheduled" for t in c["timeline"]),
                  "rescheduled")
    assert _assignment(case, "sanitation")["deadlines"]["resolve"] == "2026-11-25T02:01:00+00:00"


# -- rework (返工) --------------------------------------------------------------------------------


def test_rework_reopens_a_resolved_case_and_restarts_its_clocks(
    system: dict, api: Any, clock: FakeClock
) -> None:
    case_id = _newcase_view(api, "rw-1")
    base = f"/api/v1/cases/{case_id}/assignments/sanitation"
    _ack(system, api, case_id, "sanitation")
    assert api.post(f"{base}/reopen", json={"by": COMPOUND, "reason": "x"}).status_code == 409
    _act(system, api, f"{base}/resolve", {"note": "已清运"}, "assignment.resolved", "on_stopped")
    clock.advance(timedelta(hours=1))
    case = _act(system, api, f"{base}/reopen", {"by": COMPOUND, "reason": "复查仍有垃圾"},
                "assignment.reopened", "on_reopened")
    assert case["state"] == "dispatched" and _assignment(case, "sanitation")["reworks"] == 1
    case = _until(api, case_id, lambda c: any(t["kind"] == "rescheduled" for t in c["timeline"]),
                  "clocks restarted")
    assert _assignment(case, "sanitation")["deadlines"]["report_in"] == "2026-11-23T02:30:00+00:00"
    clock.advance(timedelta(minutes=31))
    assert _tick(system) == 1  # the restarted report-in clock


# -- the ledger, repeats and the tiers' own queues ----------------------------------------------


def test_the_ledger_follows_an_item_up_the_policy_and_exports_csv(
    system: dict, api: Any, rabbit_config: dict, clock: FakeClock
) -> None:
    amqp = rabbit_config["AMQP_URI"]
    case_id = _newcase_view(api, "l-1")
    for _ in range(3):  # compound → area → community, then the community repeats once
        clock.advance(timedelta(minutes=31))
        assert _tick(system) == 1
    case = _until(api, case_id, lambda c: "reminded" in _kinds(c), "the reminder")
    assert (case["tier"], case["escalations"]) == ("community", 2)

    [item] = api.get("/api/v1/supervision", params={"department": "sanitation"}).json()["items"]
    assert [h["action"] for h in item["history"]] == ["escalate", "escalate", "remind"]
    assert item["tier"] == "community" and item["owner"]["name"] == "胡涛"
    assert item["state"] == "open" and item["late_by_s"] == 63 * 60
    for params, count in [({"tier": "community"}, 1), ({"tier": "street"}, 0),
                          ({"grid": "511802001"}, 1), ({"grid": "511802002"}, 0),
                          ({"state": "closed"}, 0), ({"case_id": case_id}, 1)]:
        assert api.get("/api/v1/supervision", params=params).json()["total"] == count, params

    r = api.get("/api/v1/supervision.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1 and rows[0]["kind"] == "report_in" and rows[0]["fired"] == "3"
    assert rows[0]["owner"] == "社区党委书记 胡涛"
    assert api.get("/api/v1/supervision?format=csv").text == r.text
    bad = api.get("/api/v1/supervision", params={"state": "maybe", "per_page": 0})
    assert bad.status_code == 422 and set(bad.json()["errors"]) == {"state", "per_page"}

    # the community step tells its owner and the street that supervises it
    street = _collect(amqp, "dispatch.tier.street", 2)
    assert {m.delivery_info["routing_key"] for m in street} == {
        "tier.street.511802001.case.escalated", "tier.street.511802001.case.reminded"}
    community = _collect(amqp, "dispatch.tier.community", 2)
    assert {m.properties["type"] for m in community} == {"case.escalated", "case.reminded"}

    _ack(system, api, case_id, "sanitation")
    _until(api, case_id, lambda c: "supervision_closed" in _kinds(c), "item closed")
    [closed] = api.get("/api/v1/supervision", params={"state": "closed"}).json()["items"]
    assert closed["close_reason"] == "reported in"


# -- durability -----------------------------------------------------------------------------------


def test_the_auditor_reports_clocks_that_should_have_fired(
    system: dict, api: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    health = f"http://{system['escalation'].config['WEB_SERVER_ADDRESS']}/health"
    _newcase_view(api, "a-1")
    assert requests.get(health, timeout=5).json()["status"] == "ok"
    clock.advance(timedelta(minutes=45))  # due at 30 min, the margin is 60 s: not fired
    r = requests.get(health, timeout=5)
    assert r.status_code == 503
    assert (r.json()["status"], r.json()["overdue_unfired"]) == ("lagging", 1)
    assert r.json()["worst_lag_s"] == 15 * 60
    with caplog.at_level(logging.WARNING, logger="services.escalation.service"), \
            entrypoint_hook(system["escalation"], "audit") as audit:
        assert audit()["overdue_unfired"] == 1
    assert any(r.message == "clocks overdue and not fired" for r in caplog.records)
    _tick(system)
    assert requests.get(health, timeout=5).status_code == 200


def test_a_restarted_escalation_fires_what_fell_due_while_it_was_down_once(
    system: dict, api: Any, clock: FakeClock, container_factory: Any,
    service_config: dict,
) -> None:
    case_id = _newcase_view(api, "c-1", "E0402")  # fire, police, urban_mgmt: 3 report-in clocks
    system["escalation"].stop()
    clock.advance(timedelta(hours=2))  # all three fell due while escalation was down
    again = start_services(container_factory, service_config, EscalationService, clock=clock)
    with entrypoint_hook(again["escalation"], "tick") as tick:
        assert tick() == 3  # the report-in clocks, once each: one escalation of the case
        assert tick() == 0
    case = _until(api, case_id, lambda c: c["escalations"] == 1, "escalation")
    entry = next(t for t in case["timeline"] if t["kind"] == "escalated")
    assert {m["department"] for m in entry["data"]["missed"]} == {"fire", "police", "urban_mgmt"}
