"""The four services in one process, on the real broker and database, with a fake clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from nameko.testing.services import entrypoint_hook, entrypoint_waiter

from services.escalation.service import EscalationService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared.clock import FakeClock
from support import case_view, get_messages, message_json, report, saw, wait_for

ALL = (IntakeService, RoutingService, EscalationService, NotifyService)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # Monday 2026-11-23 09:00 in 雨城区


@pytest.fixture
def system(run_services: Any, clock: FakeClock) -> dict:
    return run_services(*ALL, clock=clock)


def _dispatched(api: Any, case_id: str) -> dict[str, Any] | None:
    case = case_view(api, case_id)
    return case if case["state"] == "dispatched" else None


def test_report_is_routed_and_dispatched_to_every_department(
    system: dict, api: Any, rabbit_config: dict, clock: FakeClock
) -> None:
    r = api.post("/api/v1/reports", json=report("r-1", "E0402"))  # 消防通道堵塞
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]

    case = wait_for(lambda: _dispatched(api, case_id), what="case dispatched")
    assert case["tier"] == "community"  # the category starts at the community tier
    assert case["tier_code"] == "511802001001"
    roles = {a["department"]: a["role"] for a in case["assignments"]}
    assert roles == {"fire": "lead", "police": "assist", "urban_mgmt": "assist"}
    lead = case["assignments"][0]
    # report-in 30 min of natural time, resolve 4 working hours from Monday 09:00
    assert lead["deadlines"]["report_in"].startswith("2026-11-23T01:30:00")
    assert lead["deadlines"]["resolve"].startswith("2026-11-23T07:00:00")  # 3h + 1h → 15:00
    kinds = [t["kind"] for t in case["timeline"]]
    assert kinds[:2] == ["reported", "routed"] and kinds.count("dispatched") == 3

    amqp = rabbit_config["AMQP_URI"]
    for dept, role in roles.items():
        msgs = get_messages(amqp, f"dispatch.{dept}")
        assert len(msgs) == 1
        msg = msgs[0]
        body = message_json(msg)
        assert msg.properties["message_id"] == body["event_id"]
        assert msg.properties["type"] == "case.assigned"
        assert msg.properties["delivery_mode"] == 2
        assert msg.properties["content_type"] == "application/json"
        assert msg.delivery_info["routing_key"] == f"{dept}.case.assigned"
        assert body["schema_version"] == 1 and body["case_id"] == case_id
        assert body["data"]["assignment"]["role"] == role
        assert body["data"]["case"]["location"]["path"][-1] == "通工小区"
        assert body["data"]["links"]["ack"].endswith(f"/assignments/{dept}/ack")


def test_ack_and_resolve_move_the_case_and_its_timeline(
    system: dict, api: Any, clock: FakeClock
) -> None:
    case_id = api.post("/api/v1/reports", json=report("r-2", "E0101")).json()["case_id"]
    wait_for(lambda: _dispatched(api, case_id), what="dispatch")  # 暴露垃圾: sanitation only

    base = f"/api/v1/cases/{case_id}/assignments"
    assert api.post(f"{base}/police/ack", json={}).status_code == 409  # not its case
    r = api.post(f"{base}/sanitation/resolve", json={"note": "清运完毕"})
    assert r.status_code == 409 and "report in" in r.json()["errors"]["state"][0]

    clock.advance(timedelta(minutes=10))
    r = api.post(f"{base}/sanitation/ack", json={"actor": "环卫所 王师傅", "note": "马上到"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert api.post(f"{base}/sanitation/ack", json={}).status_code == 409  # already reported in

    clock.advance(timedelta(hours=1))
    with entrypoint_waiter(
        system["escalation"], "on_stopped", callback=saw("assignment.resolved")
    ):
        r = api.post(
            f"{base}/sanitation/resolve",
            json={"note": "清运完毕", "media_urls": ["https://img.example/after.jpg"]},
        )
    assert r.status_code == 200, r.text
    case = r.json()
    assert case["state"] == "resolved"
    assert case["assignments"][0]["media_urls"] == ["https://img.example/after.jpg"]
    kinds = [t["kind"] for t in case_view(api, case_id)["timeline"]]
    assert kinds == [
        "reported",
        "routed",
        "dispatched",
        "acknowledged",
        "resolved",
        "case_resolved",
        "verification_task",
    ]
    ack = next(t for t in case["timeline"] if t["kind"] == "acknowledged")
    assert ack["actor"] == "环卫所 王师傅" and ack["at"].startswith("2026-11-23T01:10")

    # resolving stopped both clocks: nothing escalates, however late it gets
    clock.advance(timedelta(days=3))
    with entrypoint_hook(system["escalation"], "tick") as tick:
        assert tick() == 0


def test_missed_report_in_escalates_one_tier_and_tells_the_departments(
    system: dict, api: Any, rabbit_config: dict, clock: FakeClock
) -> None:
    case_id = api.post("/api/v1/reports", json=report("r-3", "E0101")).json()["case_id"]
    wait_for(lambda: _dispatched(api, case_id), what="dispatch")
    get_messages(rabbit_config["AMQP_URI"], "dispatch.sanitation")  # the assignment

    with entrypoint_hook(system["escalation"], "tick") as tick:
        clock.advance(timedelta(minutes=29))
        assert tick() == 0  # report-in is due after 30 minutes
        clock.advance(timedelta(minutes=2))
        assert tick() == 1
        assert tick() == 0  # a clock fires once

    def escalated() -> dict | None:
        case = case_view(api, case_id)
        return case if case["escalations"] == 1 else None

    case = wait_for(escalated, what="escalation reaches intake")
    assert case["tier"] == "area" and case["tier_code"] == "5118020010011"  # compound → area
    entry = next(t for t in case["timeline"] if t["kind"] == "escalated")
    assert entry["reason"].startswith("report_in_missed: sanitation (report_in)")

    msgs = wait_for(
        lambda: get_messages(rabbit_config["AMQP_URI"], "dispatch.sanitation"),
        what="escalation dispatch",
    )
    body = message_json(msgs[0])
    assert msgs[0].delivery_info["routing_key"] == "sanitation.case.escalated"
    esc = body["data"]["escalation"]
    assert esc["from_tier"]["tier"] == "compound" and esc["to_tier"]["tier"] == "area"
    assert esc["to_tier"]["owner"]["role"] == "片区长"
    assert body["data"]["case"]["description"] == "消防通道被私家车堵塞"
