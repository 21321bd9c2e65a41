"""What departments and grid tiers are sent: public case.assigned / case.escalated /
case.reminded / case.whistled messages, their recipients, routing keys and ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.notify.dispatch import (
    Outgoing,
    added_messages,
    assignment_messages,
    lead_after,
    lead_of,
    links,
    message_id,
    needs_dispatch_messages,
    notice_messages,
    progress_messages,
    routing_key,
    summons_messages,
    task_messages,
)
from services.routing.rules import route_with, summon
from shared.amqp.topology import tier_routing_key
from shared.events import InvalidEvent, decode_event, make_event
from shared.reference import ReferenceData, load_reference

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
CASE_ID = "20261123-000001"
PUBLIC_URL = "https://gridflow.example.gov.cn"
SOURCE_EVENT = "3f1e6f0a-0000-4000-8000-000000000001"
CELL = "511802001001101"  # 通工小区
COMMUNITY_OPERATOR = {"name": "胡涛", "tier": "community", "code": "511802001001"}
STREET_OPERATOR = {"name": "黄国平", "tier": "street", "code": "511802001"}


def ref() -> ReferenceData:
    return load_reference(DEMO)


def summary(category: str = "E0402") -> dict[str, Any]:
    return {
        "category": category,
        "category_name": "消防通道堵塞",
        "severity": "normal",
        "description": "消防通道被私家车堵塞",
        "location": {
            "grid_code": CELL,
            "grid_name": "通工小区",
            "building_code": "511802001001101001",
            "path": ["雨城区", "青江街道", "桐梓林社区", "桐梓林一片区", "通工小区", "1栋"],
            "lat": None,
            "lng": None,
        },
        "reporter": {"kind": "grid_worker", "id": "gw-0001", "name": "邓海燕", "phone": "",
                     "webhook_url": None},
        "media_urls": ["https://m.example.com/1.jpg"],
        "occurred_at": None,
        "reported_at": T0,
    }


def routed(category: str = "E0402") -> dict[str, Any]:
    return route_with(ref(), summary(category), T0)


def node(tier: str, role: str | None = None) -> dict[str, Any]:
    """The grid node answering at ``tier`` for 通工小区, as events carry it."""
    r = ref()
    cell, _ = r.grid.cell_for_code(CELL)
    info = r.grid.tier_info(cell, tier)
    return info if role is None else info | {"role": role}


def notify(
    departments: tuple[str, ...] = ("fire", "police", "urban_mgmt"),
    tiers: tuple[tuple[str, str], ...] = (("street", "owner"), ("district", "supervisor")),
) -> dict[str, Any]:
    return {"departments": list(departments), "tiers": [node(t, role) for t, role in tiers]}


def escalated(**overrides: Any) -> dict[str, Any]:
    """A case.escalated payload as escalation emits it: community → street."""
    out = {
        "reason": "report_in_missed",
        "missed": [
            {
                "department": "fire",
                "clock": "report_in",
                "due_at": T0 + timedelta(minutes=30),
                "next_due": T0 + timedelta(minutes=46),
            }
        ],
        "from_tier": node("community"),
        "to_tier": node("street"),
        "step": 1,
        "notify": notify(),
        "escalated_at": T0 + timedelta(minutes=31),
    }
    out.update(overrides)
    return out


def reminded(**overrides: Any) -> dict[str, Any]:
    """A case.reminded payload: the street repeats fire's resolve deadline."""
    out = {
        "reason": "resolve_missed_repeated",
        "missed": [
            {
                "department": "fire",
                "clock": "resolve",
                "due_at": T0 + timedelta(hours=2),
                "next_due": T0 + timedelta(hours=4),
            }
        ],
        "exhausted": [],
        "tier": node("street"),
        "step": 1,
        "notify": notify(("fire",), (("street", "owner"),)),
        "reminded_at": T0 + timedelta(hours=2),
    }
    out.update(overrides)
    return out


def added(
    level: str = "routine",
    departments: tuple[str, ...] = ("sanitation", "fire"),
    by: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The assignments.added payload routing builds for a whistle on the E0402 case."""
    r, case = ref(), routed("E0402")
    whistle = {
        "level": level,
        "departments": list(departments),
        "by": by or COMMUNITY_OPERATOR,
        "reason": "消防通道上堆满了建筑垃圾",
        "whistled_at": T0 + timedelta(hours=1),
    }
    return summon(
        whistle,
        case=case["case"],
        on_case=[a["department"] for a in case["assignments"]],
        snapshot=case["policy"],
        grid=r.grid,
        calendar=r.calendar,
        at=T0 + timedelta(hours=1),
    )


def as_public_event(out: Outgoing, source: str = SOURCE_EVENT) -> Any:
    """What notify publishes for ``out``, decoded again as a consumer would."""
    event = make_event(
        out.type,
        CASE_ID,
        out.payload,
        producer="notify",
        at=T0,
        event_id=message_id(source, out.key, out.type),
        public=True,
    )
    return decode_event(event.to_json(), public=True)


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
    ("source", "recipient", "type_"),
    [
        (SOURCE_EVENT, "police", "case.assigned"),
        (SOURCE_EVENT, "fire", "case.escalated"),
        ("3f1e6f0a-0000-4000-8000-000000000002", "fire", "case.assigned"),
        (SOURCE_EVENT, "tier.street.511802001", "case.assigned"),
    ],
)
def test_message_id_differs_per_source_recipient_and_type(source, recipient, type_):
    assert message_id(source, recipient, type_) != message_id(SOURCE_EVENT, "fire", "case.assigned")


# -- links, routing keys, Outgoing --------------------------------------------------------------


def test_links_point_at_the_case_and_the_departments_ack_and_resolve():
    assert links(PUBLIC_URL, CASE_ID, "fire") == {
        "case": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}",
        "ack": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}/assignments/fire/ack",
        "resolve": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}/assignments/fire/resolve",
    }


def test_links_for_a_grid_tier_point_at_the_case_only():
    assert links(PUBLIC_URL, CASE_ID) == {"case": f"{PUBLIC_URL}/api/v1/cases/{CASE_ID}"}


def test_routing_key_is_department_dot_event():
    assert routing_key("urban_mgmt", "case.assigned") == "urban_mgmt.case.assigned"
    assert routing_key("fire", "case.escalated") == "fire.case.escalated"


def test_an_outgoing_message_is_routed_by_its_recipient_and_type():
    assert Outgoing("case.assigned", "fire", {}).routing_key == "fire.case.assigned"
    tier = Outgoing("case.escalated", "tier.street.511802001", {})
    assert tier.routing_key == tier_routing_key("street", "511802001", "case.escalated")


# -- case.assigned ----------------------------------------------------------------------------


def test_one_assigned_message_per_assignment_in_order():
    r = routed("E0402")
    messages = assignment_messages(r, PUBLIC_URL, CASE_ID)
    assert [(m.type, m.key) for m in messages] == [
        ("case.assigned", "fire"),
        ("case.assigned", "police"),
        ("case.assigned", "urban_mgmt"),
    ]
    assert [m.routing_key for m in messages] == [
        "fire.case.assigned",
        "police.case.assigned",
        "urban_mgmt.case.assigned",
    ]
    assert [m.payload["assignment"]["role"] for m in messages] == ["lead", "assist", "assist"]
    for m, a in zip(messages, r["assignments"], strict=True):
        assert m.payload == {
            "department": a["department"],
            "assignment": a,
            "tier": r["tier"],
            "case": r["case"],
            "whistle": None,
            "links": links(PUBLIC_URL, CASE_ID, a["department"]),
        }


def test_single_department_category_sends_one_message():
    messages = assignment_messages(routed("E0101"), PUBLIC_URL, CASE_ID)
    assert [m.key for m in messages] == ["sanitation"]
    assert messages[0].payload["links"]["ack"].endswith("/assignments/sanitation/ack")


def test_assigned_payloads_are_valid_public_events_and_survive_the_wire():
    r = routed("E0402")
    for out in assignment_messages(r, PUBLIC_URL, CASE_ID):
        back = as_public_event(out)
        assert back.event_id == message_id(SOURCE_EVENT, out.key, "case.assigned")
        assert back.data["department"] == out.key
        assert back.data["assignment"]["resolve_due"] == out.payload["assignment"]["resolve_due"]
        assert back.data["tier"]["owner"]["name"] == "胡涛"
        assert back.data["case"]["location"]["building_code"] == "511802001001101001"
        assert back.data["links"] == out.payload["links"]
        assert back.data["whistle"] is None


def test_assigned_messages_of_one_event_have_distinct_ids():
    ids = {
        message_id(SOURCE_EVENT, m.key, m.type)
        for m in assignment_messages(routed("E0402"), PUBLIC_URL, CASE_ID)
    }
    assert len(ids) == 3


def test_assigned_messages_can_carry_the_whistle():
    whistle = {"level": "routine", "by": COMMUNITY_OPERATOR, "note": "请环卫到场"}
    messages = assignment_messages(routed("E0101"), PUBLIC_URL, CASE_ID, whistle)
    assert [m.payload["whistle"] for m in messages] == [whistle]
    assert as_public_event(messages[0]).data["whistle"] == whistle


# -- summons (a whistle) ------------------------------------------------------------------------


def test_a_routine_whistle_assigns_the_new_and_tells_those_already_on_the_case():
    a = added("routine", ("sanitation", "fire"))
    messages = summons_messages(a, node("community"), PUBLIC_URL, CASE_ID)
    assert [(m.type, m.routing_key) for m in messages] == [
        ("case.assigned", "sanitation.case.assigned"),
        ("case.whistled", "fire.case.whistled"),
    ]
    assigned, whistled = messages
    whistle = {"level": "routine", "by": COMMUNITY_OPERATOR, "note": "消防通道上堆满了建筑垃圾"}
    assert assigned.payload["assignment"] == a["assignments"][0]
    assert assigned.payload["assignment"]["role"] == "summoned"
    assert assigned.payload["tier"] == node("community")  # the case stays where it is
    assert assigned.payload["whistle"] == whistle
    assert assigned.payload["links"] == links(PUBLIC_URL, CASE_ID, "sanitation")
    assert whistled.payload == {
        "department": "fire",
        "recipient": {"kind": "department", "department": "fire"},
        "whistle": whistle,
        "departments": ["sanitation", "fire"],
        "case": a["case"],
        "links": links(PUBLIC_URL, CASE_ID, "fire"),
    }


def test_a_hard_whistle_puts_the_summoned_under_the_district_and_tells_its_leadership():
    a = added("hard", ("housing", "police"), STREET_OPERATOR)
    messages = summons_messages(a, node("community"), PUBLIC_URL, CASE_ID)
    assert [(m.type, m.key) for m in messages] == [
        ("case.assigned", "housing"),
        ("case.whistled", "police"),
        ("case.whistled", "tier.district.511802"),
    ]
    assert messages[0].payload["tier"] == node("district")
    leadership = messages[2]
    assert leadership.routing_key == "tier.district.511802.case.whistled"
    assert leadership.payload["department"] is None
    assert leadership.payload["recipient"] == {"kind": "tier", "tier": node("district", "owner")}
    assert leadership.payload["whistle"]["level"] == "hard"
    assert leadership.payload["departments"] == ["housing", "police"]
    assert leadership.payload["links"] == links(PUBLIC_URL, CASE_ID)


def test_a_whistle_for_departments_already_on_the_case_assigns_nobody():
    a = added("routine", ("police", "fire"))
    messages = summons_messages(a, node("community"), PUBLIC_URL, CASE_ID)
    assert [(m.type, m.key) for m in messages] == [
        ("case.whistled", "police"),
        ("case.whistled", "fire"),
    ]


@pytest.mark.parametrize(
    ("level", "departments", "by"),
    [
        ("routine", ("sanitation", "fire"), COMMUNITY_OPERATOR),
        ("routine", ("police",), COMMUNITY_OPERATOR),
        ("hard", ("housing", "sanitation"), STREET_OPERATOR),
        ("hard", ("fire", "housing"), COMMUNITY_OPERATOR),
    ],
)
def test_summons_payloads_are_valid_public_events_and_survive_the_wire(level, departments, by):
    messages = summons_messages(
        added(level, departments, by), node("community"), PUBLIC_URL, CASE_ID
    )
    assert messages
    for out in messages:
        back = as_public_event(out)
        assert back.type == out.type
        assert back.data["whistle"]["level"] == level
        assert back.data["whistle"]["by"] == by
        assert back.data["links"] == out.payload["links"]
    ids = {message_id(SOURCE_EVENT, m.key, m.type) for m in messages}
    assert len(ids) == len(messages)


# -- case.escalated and case.reminded -----------------------------------------------------------


def test_one_escalated_message_per_notified_department_then_per_tier():
    e = escalated()
    messages = notice_messages("case.escalated", "escalation", e, summary(), PUBLIC_URL, CASE_ID)
    assert [m.routing_key for m in messages] == [
        "fire.case.escalated",
        "police.case.escalated",
        "urban_mgmt.case.escalated",
        tier_routing_key("street", "511802001", "case.escalated"),
        tier_routing_key("district", "511802", "case.escalated"),
    ]
    assert {m.type for m in messages} == {"case.escalated"}
    for m in messages[:3]:
        assert m.payload == {
            "department": m.key,
            "recipient": {"kind": "department", "department": m.key},
            "escalation": e,
            "case": summary(),
            "links": links(PUBLIC_URL, CASE_ID, m.key),
        }
    street, district = messages[3:]
    assert street.payload == {
        "department": None,
        "recipient": {"kind": "tier", "tier": node("street", "owner")},
        "escalation": e,
        "case": summary(),
        "links": links(PUBLIC_URL, CASE_ID),
    }
    assert district.payload["recipient"]["tier"]["role"] == "supervisor"
    assert district.key == "tier.district.511802"


def test_a_reminder_goes_to_its_departments_and_tiers_in_the_reminder_field():
    r = reminded()
    messages = notice_messages("case.reminded", "reminder", r, summary(), PUBLIC_URL, CASE_ID)
    assert [(m.type, m.routing_key) for m in messages] == [
        ("case.reminded", "fire.case.reminded"),
        ("case.reminded", "tier.street.511802001.case.reminded"),
    ]
    for m in messages:
        assert m.payload["reminder"] == r
        assert "escalation" not in m.payload


def test_no_one_to_notify_no_messages():
    nobody = {"departments": [], "tiers": []}
    assert (
        notice_messages(
            "case.escalated", "escalation", escalated(notify=nobody), None, PUBLIC_URL, CASE_ID
        )
        == []
    )


def test_tiers_only_are_told_without_any_department():
    e = escalated(notify=notify((), (("street", "owner"),)))
    messages = notice_messages("case.escalated", "escalation", e, None, PUBLIC_URL, CASE_ID)
    assert [m.key for m in messages] == ["tier.street.511802001"]


@pytest.mark.parametrize(
    ("type_", "field", "notice"),
    [("case.escalated", "escalation", escalated), ("case.reminded", "reminder", reminded)],
)
def test_notice_payloads_are_valid_public_events_with_and_without_the_case(type_, field, notice):
    n = notice()
    for case in (summary(), None):
        messages = notice_messages(type_, field, n, case, PUBLIC_URL, CASE_ID)
        assert messages
        for out in messages:
            back = as_public_event(out)
            assert back.type == type_
            assert back.data[field]["reason"] == n["reason"]
            assert back.data[field]["step"] == 1
            assert back.data[field]["missed"][0]["next_due"] == n["missed"][0]["next_due"]
            assert back.data["case"] == case
            assert back.data["recipient"]["kind"] in ("department", "tier")
            if back.data["recipient"]["kind"] == "tier":
                assert back.data["department"] is None
                assert back.data["recipient"]["tier"]["code"] in ("511802001", "511802")
            else:
                assert back.data["recipient"]["department"] == back.data["department"]


def test_an_escalation_at_the_top_with_its_clocks_stopped_is_sent_too():
    stopped = {"department": "fire", "clock": "resolve", "due_at": T0, "next_due": None}
    e = escalated(
        reason="resolve_missed",
        missed=[stopped],
        from_tier=node("street"),
        to_tier=node("district"),
        step=2,
        notify=notify(("police",), (("district", "owner"),)),
    )
    for out in notice_messages("case.escalated", "escalation", e, None, PUBLIC_URL, CASE_ID):
        back = as_public_event(out)
        assert back.data["escalation"]["to_tier"]["code"] == "511802"
        assert back.data["escalation"]["missed"][0]["next_due"] is None


def test_notice_messages_of_one_event_have_distinct_ids():
    messages = notice_messages(
        "case.escalated", "escalation", escalated(), summary(), PUBLIC_URL, CASE_ID
    )
    assert len({message_id(SOURCE_EVENT, m.key, m.type) for m in messages}) == len(messages) == 5


def test_an_escalated_payload_is_not_an_internal_event():
    out = notice_messages(
        "case.escalated", "escalation", escalated(), summary(), PUBLIC_URL, CASE_ID
    )[0]
    with pytest.raises(InvalidEvent, match=r"^case\.escalated: "):
        make_event("case.escalated", CASE_ID, out.payload, producer="notify", at=T0)


def test_the_internal_escalation_is_a_valid_event():
    # The payload these tests feed notify is what escalation may publish.
    event = make_event("case.escalated", CASE_ID, escalated(), producer="escalation", at=T0)
    assert event.data["notify"]["tiers"][1]["role"] == "supervisor"
    make_event("case.reminded", CASE_ID, reminded(), producer="escalation", at=T0)


# -- departments added other than by a whistle -------------------------------------------------


def rerouted(role: str = "lead", department: str = "urban_mgmt", reason: str = "reroute"):
    """assignments.added as routing builds it when fire returned its assignment."""
    a = routed("E0402")["assignments"][0] | {"department": department, "role": role}
    return {
        "reason": reason, "requested_by": "routing", "note": "fire returned it: wrong_location",
        "assignments": [a], "already": [], "replaces": "fire", "level": None, "by": None,
        "whistler": None, "raise_to": None, "case": summary(), "added_at": T0,
    }


def test_a_reroute_assigns_the_next_department_at_the_cases_tier_without_a_whistle():
    messages = added_messages(rerouted(), node("community"), PUBLIC_URL, CASE_ID)
    assert [(m.type, m.routing_key) for m in messages] == [
        ("case.assigned", "urban_mgmt.case.assigned")]
    assert messages[0].payload["whistle"] is None
    assert messages[0].payload["tier"] == node("community")
    back = as_public_event(messages[0])
    assert back.data["assignment"]["role"] == "lead"


def test_added_messages_for_a_whistle_are_the_summons():
    a = added("routine", ("sanitation", "fire"))
    assert added_messages(a, node("community"), PUBLIC_URL, CASE_ID) == summons_messages(
        a, node("community"), PUBLIC_URL, CASE_ID)


# -- the lead department -----------------------------------------------------------------------


def test_the_lead_is_the_routed_assignment_with_role_lead():
    assert lead_of(routed("E0402")["assignments"]) == "fire"
    assert lead_of([]) is None


@pytest.mark.parametrize(("reason", "role", "lead"), [
    ("reroute", "lead", "urban_mgmt"),  # the returned lead's successor leads
    ("manual", "lead", "urban_mgmt"),
    ("reroute", "assist", "fire"),  # an assistant's successor does not
    ("assist", "lead", "fire"),  # only a reroute or a manual dispatch moves the lead
])
def test_the_lead_moves_with_a_reroute_or_manual_dispatch_of_a_lead(reason, role, lead):
    assert lead_after("fire", rerouted(role, reason=reason)) == lead


def test_a_whistle_never_moves_the_lead():
    assert lead_after("fire", added("routine", ("sanitation",))) == "fire"


# -- progress, tasks, manual dispatch ----------------------------------------------------------


def progressed(department: str = "police") -> dict[str, Any]:
    return {"department": department, "note": "已到场疏导车辆", "media_urls": [],
            "actor": "王警官", "at": T0 + timedelta(hours=1)}


def test_progress_of_an_assistant_goes_to_the_lead_department():
    p = progressed("police")
    messages = progress_messages(p, "fire", summary(), PUBLIC_URL, CASE_ID)
    assert [(m.type, m.routing_key) for m in messages] == [("case.progress", "fire.case.progress")]
    assert messages[0].payload == {
        "department": "fire",
        "recipient": {"kind": "department", "department": "fire"},
        "progress": p,
        "case": summary(),
        "links": links(PUBLIC_URL, CASE_ID, "fire"),
    }
    back = as_public_event(messages[0])
    assert back.data["progress"]["note"] == "已到场疏导车辆"


def test_the_leads_own_progress_goes_to_nobody():
    assert progress_messages(progressed("fire"), "fire", summary(), PUBLIC_URL, CASE_ID) == []


def test_progress_without_a_known_lead_goes_to_nobody():
    assert progress_messages(progressed(), None, None, PUBLIC_URL, CASE_ID) == []


def test_a_task_goes_to_the_grid_worker_of_its_node():
    worker = node("compound")
    task = {"id": 7, "kind": "verification", "assignee": worker,
            "due_at": T0 + timedelta(days=1), "note": ""}
    messages = task_messages({"task": task, "case": summary(), "at": T0}, PUBLIC_URL, CASE_ID)
    assert [(m.type, m.routing_key) for m in messages] == [
        ("task.assigned", f"tier.compound.{CELL}.task.assigned")]
    out = messages[0]
    assert out.payload["recipient"] == {"kind": "tier", "tier": worker | {"role": "owner"}}
    assert out.payload["department"] is None
    assert out.payload["links"] == links(PUBLIC_URL, CASE_ID)
    back = as_public_event(out)
    assert back.data["task"]["kind"] == "verification"
    assert back.data["task"]["assignee"]["code"] == CELL


def test_needs_dispatch_goes_to_the_owner_of_the_tier_named():
    returned = {"department": "fire", "role": "lead", "reason_code": "wrong_location",
                "note": "", "actor": "", "at": T0}
    data = {"returned": returned, "tier": node("community"), "reason": "no candidate left",
            "case": summary(), "at": T0}
    messages = needs_dispatch_messages(data, PUBLIC_URL, CASE_ID)
    assert [(m.type, m.routing_key) for m in messages] == [
        ("case.needs_dispatch", "tier.community.511802001001.case.needs_dispatch")]
    back = as_public_event(messages[0])
    assert back.data["returned"]["reason_code"] == "wrong_location"
    assert back.data["reason"] == "no candidate left"
    assert back.data["recipient"]["tier"]["role"] == "owner"
    assert back.data["links"] == links(PUBLIC_URL, CASE_ID)


def test_the_reporters_feedback_webhook_is_not_sent_to_departments_or_tiers():
    case = summary() | {"reporter": summary()["reporter"] | {
        "webhook_url": "https://app.example.com/hook?token=s3cret"}}
    r = routed("E0402") | {"case": case}
    messages = [
        *assignment_messages(r, PUBLIC_URL, CASE_ID),
        *notice_messages("case.escalated", "escalation", escalated(), case, PUBLIC_URL, CASE_ID),
        *progress_messages(progressed("police"), "fire", case, PUBLIC_URL, CASE_ID),
    ]
    for m in messages:
        assert m.payload["case"]["reporter"]["webhook_url"] is None
        assert m.payload["case"]["reporter"]["id"] == "gw-0001"
    assert case["reporter"]["webhook_url"]  # the event's own data is left alone


def test_a_rework_goes_to_the_department_that_works_again():
    from services.notify.dispatch import rework_messages

    reopened = {"department": "fire", "reason": "复查仍有杂物", "at": T0}
    [out] = rework_messages(reopened, None, PUBLIC_URL, CASE_ID)
    assert (out.type, out.key, out.routing_key) == ("case.reworked", "fire",
                                                    "fire.case.reworked")
    assert out.payload["links"]["ack"].endswith("/assignments/fire/ack")
    make_event("case.reworked", CASE_ID, out.payload, producer="notify", at=T0, public=True)
