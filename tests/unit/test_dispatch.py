"""What departments are sent: public case.assigned / case.escalated payloads and their ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.escalation.clocks import REPORT_IN, RESOLVE, Missed, escalation
from services.notify.dispatch import (
    assignment_messages,
    escalation_messages,
    links,
    message_id,
    routing_key,
)
from services.routing.rules import route
from shared.events import InvalidEvent, decode_event, make_event
from shared.reference import load_reference

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
CASE_ID = "20261123-000001"
PUBLIC_URL = "https://gridflow.example.gov.cn"
SOURCE_EVENT = "3f1e6f0a-0000-4000-8000-000000000001"


def summary(category: str = "E0402") -> dict[str, Any]:
    return {
        "category": category,
        "category_name": "消防通道堵塞",
        "description": "消防通道被私家车堵塞",
        "location": {
            "grid_code": "511802001001101",
            "grid_name": "通工小区",
            "building_code": "511802001001101001",
            "path": ["雨城区", "青江街道", "桐梓林社区", "桐梓林一片区", "通工小区", "1栋"],
            "lat": None,
            "lng": None,
        },
        "reporter": {"kind": "grid_worker", "id": "gw-0001", "name": "邓海燕", "phone": ""},
        "media_urls": ["https://m.example.com/1.jpg"],
        "occurred_at": None,
        "reported_at": T0,
    }


def routed(category: str = "E0402") -> dict[str, Any]:
    ref = load_reference(DEMO)
    return route(
        summary(category), catalogue=ref.catalogue, grid=ref.grid, calendar=ref.calendar, at=T0
    )


def escalated() -> dict[str, Any]:
    return escalation(
        grid=load_reference(DEMO).grid,
        grid_code="511802001001101",
        tier="community",
        missed=[Missed("fire", REPORT_IN, T0 + timedelta(minutes=30))],
        departments_open=["police", "urban_mgmt", "fire"],
        at=T0 + timedelta(minutes=31),
    )


# -- message ids ------------------------------------------------------------------------------


def test_same_source_department_and_type_give_the_same_id():
    assert message_id(SOURCE_EVENT, "fire", "case.assigned") == message_id(
        SOURCE_EVENT, "fire", "case.assigned"
    )


def test_message_id_is_a_uuid5():
    assert uuid.UUID(message_id(SOURCE_EVENT, "fire", "case.assigned")).version == 5


def test_message_id_is_stable_across_releases():
    # Consumers dedupe on it: a redelivery after an upgrade must keep the id.
    assert message_id("ev-1", "fire", "case.assigned") == "809aadce-3e18-5774-b58e-e49a31f39f0d"


@pytest.mark.parametrize(
    ("source", "department", "type_"),
    [
        (SOURCE_EVENT, "police", "case.assigned"),
        (SOURCE_EVENT, "fire", "case.escalated"),
        ("3f1e6f0a-0000-4000-8000-000000000002", "fire", "case.assigned"),
    ],
)
def test_message_id_differs_per_source_department_and_type(source, department, type_):
    assert message_id(source, department, type_) != message_id(
        SOURCE_EVENT, "fire", "case.assigned"
    )


# -- links and routing keys ---------------------------------------------------------------------


def test_links_point_at_the_case_and_the_departments_ack_and_resolve():
    assert links(PUBLIC_URL, CASE_ID, "fire") == {
        "case": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}",
        "ack": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}/assignments/fire/ack",
        "resolve": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}/assignments/fire/resolve",
    }


def test_routing_key_is_department_dot_event():
    assert routing_key("urban_mgmt", "case.assigned") == "urban_mgmt.case.assigned"
    assert routing_key("fire", "case.escalated") == "fire.case.escalated"


# -- case.assigned ----------------------------------------------------------------------------


def test_one_assigned_message_per_assignment_in_order():
    r = routed("E0402")
    messages = assignment_messages(r, PUBLIC_URL, CASE_ID)
    assert [m["department"] for m in messages] == ["fire", "police", "urban_mgmt"]
    assert [m["assignment"]["role"] for m in messages] == ["lead", "assist", "assist"]
    for m, a in zip(messages, r["assignments"], strict=True):
        assert m["assignment"] == a
        assert m["tier"] == r["tier"]
        assert m["case"] == r["case"]
        assert m["links"] == links(PUBLIC_URL, CASE_ID, a["department"])
        assert set(m) == {"department", "assignment", "tier", "case", "links"}


def test_single_department_category_sends_one_message():
    messages = assignment_messages(routed("E0101"), PUBLIC_URL, CASE_ID)
    assert [m["department"] for m in messages] == ["sanitation"]
    assert messages[0]["links"]["ack"].endswith("/assignments/sanitation/ack")


def test_assigned_payloads_are_valid_public_events_and_survive_the_wire():
    r = routed("E0402")
    for payload in assignment_messages(r, PUBLIC_URL, CASE_ID):
        mid = message_id(SOURCE_EVENT, payload["department"], "case.assigned")
        event = make_event(
            "case.assigned", CASE_ID, payload, producer="notify", at=T0, event_id=mid, public=True
        )
        back = decode_event(event.to_json(), public=True)
        assert back.event_id == mid
        assert back.data["department"] == payload["department"]
        assert back.data["assignment"]["resolve_due"] == payload["assignment"]["resolve_due"]
        assert back.data["tier"]["owner"]["name"] == "胡涛"
        assert back.data["case"]["location"]["building_code"] == "511802001001101001"
        assert back.data["links"] == payload["links"]


def test_assigned_messages_of_one_event_have_distinct_ids():
    ids = {
        message_id(SOURCE_EVENT, m["department"], "case.assigned")
        for m in assignment_messages(routed("E0402"), PUBLIC_URL, CASE_ID)
    }
    assert len(ids) == 3


# -- case.escalated ---------------------------------------------------------------------------


def test_one_escalated_message_per_notified_department():
    e = escalated()
    messages = escalation_messages(e, summary(), PUBLIC_URL, CASE_ID)
    assert [m["department"] for m in messages] == ["fire", "police", "urban_mgmt"]
    for m in messages:
        assert m["escalation"] == e
        assert m["case"] == summary()
        assert m["links"] == links(PUBLIC_URL, CASE_ID, m["department"])


def test_no_one_to_notify_no_messages():
    assert escalation_messages(escalated() | {"notify": []}, None, PUBLIC_URL, CASE_ID) == []


def test_escalated_payloads_are_valid_public_events_with_and_without_the_case():
    e = escalation(
        grid=load_reference(DEMO).grid,
        grid_code="511802001001101",
        tier="district",
        missed=[Missed("fire", RESOLVE, T0)],
        departments_open=["police"],
        at=T0,
    )
    for case in (summary(), None):
        for payload in escalation_messages(e, case, PUBLIC_URL, CASE_ID):
            event = make_event(
                "case.escalated", CASE_ID, payload, producer="notify", at=T0, public=True
            )
            back = decode_event(event.to_json(), public=True)
            assert back.data["escalation"]["reason"] == "resolve_missed_at_top_tier"
            assert back.data["escalation"]["to_tier"]["code"] == "511802"
            assert back.data["case"] == case
            assert back.data["department"] in ("fire", "police")


def test_an_escalated_payload_is_not_an_internal_event():
    payload = escalation_messages(escalated(), summary(), PUBLIC_URL, CASE_ID)[0]
    with pytest.raises(InvalidEvent, match=r"^case\.escalated: "):
        make_event("case.escalated", CASE_ID, payload, producer="notify", at=T0)
