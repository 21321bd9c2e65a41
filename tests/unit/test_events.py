"""The event catalogue: building, encoding and decoding events, and what decoding rejects."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from shared.events import (
    INTERNAL,
    PUBLIC,
    Event,
    InvalidEvent,
    PolicySnapshotSchema,
    RecipientSchema,
    decode_event,
    make_event,
    spec_for,
)
from shared.reference import load_reference

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
BEIJING = timezone(timedelta(hours=8))
CASE_ID = "20261123-000001"

SUMMARY: dict[str, Any] = {
    "category": "E0402",
    "category_name": "消防通道堵塞",
    "severity": "urgent",
    "description": "消防通道被私家车堵塞",
    "location": {
        "grid_code": "511802001001101",
        "grid_name": "通工小区",
        "building_code": "511802001001101001",
        "path": ["雨城区", "青江街道", "桐梓林社区", "桐梓林一片区", "通工小区", "1栋"],
        "lat": 29.9735,
        "lng": 102.9985,
    },
    "reporter": {
        "kind": "grid_worker",
        "id": "gw-0001",
        "name": "邓海燕",
        "phone": "13800000001",
        "webhook_url": "https://app.example.com/hooks/gw-0001",
    },
    "media_urls": ["https://m.example.com/1.jpg"],
    "occurred_at": datetime(2026, 11, 23, 8, 45, tzinfo=BEIJING),
    "reported_at": T0,
}
TIER = {
    "tier": "community",
    "code": "511802001001",
    "name": "桐梓林社区",
    "owner": {"id": "cm-0001", "name": "胡涛", "role": "社区党委书记", "phone": "13900000003"},
}
STREET = {
    "tier": "street",
    "code": "511802001",
    "name": "青江街道",
    "owner": {"id": "st-0001", "name": "黄国平", "role": "街道主任", "phone": "13900000002"},
}
DISTRICT = {
    "tier": "district",
    "code": "511802",
    "name": "雨城区",
    "owner": {"id": "dc-0001", "name": "张建国", "role": "中心主任", "phone": "13900000001"},
}
ASSIGNMENT = {
    "department": "fire",
    "role": "lead",
    "report_in_due": T0 + timedelta(minutes=30),
    "resolve_due": T0 + timedelta(hours=6),
    "report_in": "30m",
    "resolve": "4wh",
}
POLICY = {
    "name": "urgent_safety",
    "version": "2026.1",
    "severity": "urgent",
    "start": "community",
    "steps": [
        {
            "tier": "community",
            "notify": ["departments", "tier_owner", "supervisors"],
            "report_in": "10m",
            "resolve": "1h",
            "repeat": 0,
        },
        {
            "tier": "street",
            "notify": ["departments", "tier_owner", "supervisors"],
            "report_in": "15m",
            "resolve": "2h",
            "repeat": 1,
        },
        {
            "tier": "district",
            "notify": ["departments", "tier_owner"],
            "report_in": "15m",
            "resolve": "2h",
            "repeat": 3,
        },
    ],
    "whistle": {
        "routine": {"level": "routine", "report_in": "30m", "resolve": "1wd", "raise_to": None},
        "hard": {"level": "hard", "report_in": "30m", "resolve": "1wd", "raise_to": "district"},
    },
}
MISSED = {
    "department": "fire",
    "clock": "report_in",
    "due_at": T0 + timedelta(minutes=30),
    "next_due": T0 + timedelta(minutes=46),
}
NOTIFY = {
    "departments": ["fire", "police"],
    "tiers": [STREET | {"role": "owner"}, DISTRICT | {"role": "supervisor"}],
}
ESCALATION = {
    "reason": "report_in_missed",
    "missed": [MISSED],
    "from_tier": TIER,
    "to_tier": STREET,
    "step": 1,
    "notify": NOTIFY,
    "escalated_at": T0 + timedelta(minutes=31),
}
REMINDER = {
    "reason": "resolve_missed_repeated",
    "missed": [MISSED | {"clock": "resolve", "next_due": T0 + timedelta(hours=4)}],
    "exhausted": [MISSED | {"department": "police", "next_due": None}],  # its clock stopped
    "tier": STREET,
    "step": 1,
    "notify": {"departments": ["fire"], "tiers": [STREET | {"role": "owner"}]},
    "reminded_at": T0 + timedelta(hours=2),
}
OPERATOR = {"name": "胡涛", "tier": "community", "code": "511802001001"}
STREET_OPERATOR = {"name": "黄国平", "tier": "street", "code": "511802001"}
WHISTLE_INFO = {"level": "hard", "by": STREET_OPERATOR, "note": "多部门推诿"}
SUMMONED = ASSIGNMENT | {"department": "sanitation", "role": "summoned", "resolve": "1wd"}
CELL = {
    "tier": "compound",
    "code": "511802001001101",
    "name": "通工小区",
    "owner": {"id": "gw-0001", "name": "邓海燕", "role": "网格员", "phone": "13800000001"},
}
GRID_WORKER = {"name": "邓海燕", "tier": "compound", "code": "511802001001101"}
RETURNED = {
    "department": "fire",
    "role": "lead",
    "reason_code": "needs_other_department",
    "note": "应由交警拖车",
    "actor": "fire:7",
    "at": T0,
}
PROGRESSED = {
    "department": "police",
    "note": "已联系车主",
    "media_urls": ["https://m.example.com/progress.jpg"],
    "actor": "police:3",
    "at": T0,
}
TASK = {"id": 11, "kind": "verification", "assignee": CELL, "due_at": None, "note": ""}
FOLLOWER = {
    "kind": "resident",
    "id": "r-77",
    "name": "李娜",
    "phone": "13700000077",
    "webhook_url": None,
}
SUPERVISED = {
    "id": 1,
    "department": "fire",
    "kind": "report_in",
    "due_at": T0 + timedelta(minutes=30),
    "tier": STREET,
    "at": T0 + timedelta(minutes=31),
    "reason": "report_in_missed",
    "late_by_s": None,
}

INTERNAL_DATA: dict[str, dict[str, Any]] = {
    "case.reported": {"report_id": "r-0001", "case": SUMMARY},
    "case.routed": {
        "case": SUMMARY,
        "tier": TIER,
        "assignments": [ASSIGNMENT, ASSIGNMENT | {"department": "police", "role": "assist"}],
        "policy": POLICY,
        "catalogue_version": "2026.1",
        "routed_at": T0,
    },
    "case.whistled": {
        "level": "hard",
        "departments": ["sanitation", "fire"],
        "by": STREET_OPERATOR,
        "reason": "多部门推诿",
        "whistled_at": T0,
    },
    "assignments.added": {
        "reason": "whistle",
        "level": "hard",
        "by": STREET_OPERATOR,
        "note": "多部门推诿",
        "assignments": [SUMMONED],
        "already": ["fire"],
        "whistler": STREET,
        "raise_to": DISTRICT,
        "case": SUMMARY,
        "added_at": T0,
    },
    "case.escalated": ESCALATION,
    "case.reminded": REMINDER,
    "assignment.dispatched": {
        "department": "fire",
        "role": "lead",
        "routing_key": "fire.case.assigned",
        "message_id": "809aadce-3e18-5774-b58e-e49a31f39f0d",
        "dispatched_at": T0,
    },
    "assignment.acknowledged": {"department": "fire", "actor": "fire:7", "note": "到场", "at": T0},
    "assignment.resolved": {
        "department": "fire",
        "actor": "fire:7",
        "note": "已清理",
        "media_urls": ["https://m.example.com/after.jpg"],
        "at": T0,
    },
    "assignment.paused": {
        "department": "fire",
        "reason": "等待车主挪车",
        "actor": "fire:7",
        "at": T0,
    },
    "assignment.resumed": {"department": "fire", "actor": "fire:7", "at": T0},
    "assignment.reopened": {"department": "fire", "reason": "通道又被堵", "at": T0},
    "extension.decided": {
        "extension_id": 7,
        "department": "fire",
        "approved": True,
        "extend_by": "1wd",
        "approver": STREET_OPERATOR,
        "note": "同意延期",
        "at": T0,
    },
    "assignment.rescheduled": {
        "department": "fire",
        "report_in_due": None,  # paused
        "resolve_due": T0 + timedelta(days=2),
        "reason": "extension approved",
        "at": T0,
    },
    "case.tier_changed": {
        "from_tier": TIER,
        "to_tier": DISTRICT,
        "reason": "hard whistle",
        "at": T0,
    },
    "supervision.opened": {"items": [SUPERVISED]},
    "supervision.closed": {
        "items": [SUPERVISED | {"tier": None, "reason": "reported in", "late_by_s": 120.0}]
    },
    "case.resolved": {"resolved_at": T0},
    "assignment.requested": {
        "department": "traffic",
        "role": "assist",
        "kind": "assist",
        "requested_by": "fire",
        "note": "需要拖车",
        "at": T0,
    },
    "assignment.returned": RETURNED,
    "case.needs_dispatch": {
        "returned": RETURNED,
        "tier": TIER,
        "reason": "fire returned it and no other department is left: dispatch by hand",
        "case": SUMMARY,
        "at": T0,
    },
    "assignment.progressed": PROGRESSED,
    "task.created": {"task": TASK, "case": SUMMARY, "at": T0},
    "case.verified": {
        "passed": False,
        "by": GRID_WORKER,
        "note": "通道仍被占用",
        "media_urls": ["https://m.example.com/check.jpg"],
        "rework": ["fire"],
        "at": T0,
    },
    "case.closed": {
        "closed_at": T0,
        "rate_until": T0 + timedelta(days=7),
        "follow_up_at": T0 + timedelta(days=3),
        "grid_code": "511802001001101",
    },
    "case.reopened": {
        "cause": "rating",
        "reason": "reporter unsatisfied (2/5)",
        "departments": ["fire"],
        "at": T0,
    },
    "case.rated": {"score": 2, "fixed": False, "comment": "又堵了", "reopens": True, "at": T0},
    "followup.due": {"due_at": T0 + timedelta(days=3), "grid_code": "511802001001101"},
    "reporter.attached": {
        "reporter": FOLLOWER,
        "report_id": "r-0002",
        "duplicate_case_id": "20261123-000002",
        "at": T0,
    },
    "reporter.detached": {
        "reporter": FOLLOWER,
        "duplicate_case_id": "20261123-000002",
        "at": T0,
    },
}
LINKS = {"case": "https://g.example/api/v1/cases/1"}
PUBLIC_DATA: dict[str, dict[str, Any]] = {
    "case.assigned": {
        "department": "fire",
        "assignment": ASSIGNMENT,
        "tier": TIER,
        "case": SUMMARY,
        "whistle": None,
        "links": LINKS,
    },
    "case.escalated": {
        "department": "fire",
        "recipient": {"kind": "department", "department": "fire", "tier": None},
        "escalation": ESCALATION,
        "case": SUMMARY,
        "links": {},
    },
    "case.reminded": {
        "department": None,
        "recipient": {"kind": "tier", "department": None, "tier": STREET | {"role": "owner"}},
        "reminder": REMINDER,
        "case": None,
        "links": LINKS,
    },
    "case.whistled": {
        "department": None,
        "recipient": {"kind": "tier", "department": None, "tier": DISTRICT | {"role": "owner"}},
        "whistle": WHISTLE_INFO,
        "departments": ["sanitation", "fire"],
        "case": SUMMARY,
        "links": LINKS,
    },
    "case.progress": {
        "department": "fire",
        "recipient": {"kind": "department", "department": "fire", "tier": None},
        "progress": PROGRESSED,
        "case": SUMMARY,
        "links": LINKS,
    },
    "case.reworked": {
        "department": "fire",
        "recipient": {"kind": "department", "department": "fire", "tier": None},
        "rework": {"department": "fire", "reason": "复查仍有杂物", "at": T0},
        "case": SUMMARY,
        "links": LINKS,
    },
    "task.assigned": {
        "department": None,
        "recipient": {"kind": "tier", "department": None, "tier": CELL | {"role": "owner"}},
        "task": TASK,
        "case": SUMMARY,
        "links": LINKS,
    },
    "case.needs_dispatch": {
        "department": None,
        "recipient": {"kind": "tier", "department": None, "tier": TIER | {"role": "owner"}},
        "returned": RETURNED,
        "reason": "fire returned it and no other department is left: dispatch by hand",
        "case": SUMMARY,
        "links": {},
    },
}


def event(type_: str = "case.routed", **kw: Any) -> Event:
    data = kw.pop("data", None) or (PUBLIC_DATA if kw.get("public") else INTERNAL_DATA)[type_]
    return make_event(type_, CASE_ID, data, producer="test", at=T0, **kw)


def wire(type_: str = "case.routed", *, public: bool = False) -> dict[str, Any]:
    """A valid envelope as a JSON-ready dict, to break one part at a time."""
    return json.loads(event(type_, public=public).to_json())


def decode_error(raw: dict[str, Any] | list | bytes | str, *, public: bool = False) -> str:
    body = raw if isinstance(raw, bytes | str) else json.dumps(raw)
    with pytest.raises(InvalidEvent) as exc:
        decode_event(body, public=public)
    return str(exc.value)


# -- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", sorted(INTERNAL))
def test_every_internal_event_survives_the_wire(type_):
    sent = event(type_)
    got = decode_event(sent.to_json())
    assert got == sent
    for name, value in INTERNAL_DATA[type_].items():
        assert got.data[name] == value, name


@pytest.mark.parametrize("type_", sorted(PUBLIC))
def test_every_public_event_survives_the_wire(type_):
    sent = event(type_, public=True)
    got = decode_event(sent.to_json(), public=True)
    assert got == sent
    assert got.public is True
    for name, value in PUBLIC_DATA[type_].items():
        assert got.data[name] == value, name


def test_round_trip_keeps_datetimes_as_aware_datetimes():
    got = decode_event(event("case.routed").to_json())
    assert got.occurred_at == T0
    assert got.data["routed_at"] == T0
    assert got.data["assignments"][0]["resolve_due"] == T0 + timedelta(hours=6)
    assert isinstance(got.data["case"]["reported_at"], datetime)
    # The instant and the offset it was written in both survive.
    occurred = got.data["case"]["occurred_at"]
    assert occurred == datetime(2026, 11, 23, 0, 45, tzinfo=UTC)
    assert occurred.utcoffset() == timedelta(hours=8)


def test_round_trip_keeps_the_envelope():
    sent = event("case.resolved", event_id="e-1")
    got = decode_event(sent.to_json())
    assert (got.event_id, got.type, got.case_id, got.producer) == (
        "e-1",
        "case.resolved",
        CASE_ID,
        "test",
    )
    assert (got.schema_version, got.occurred_at, got.public) == (1, T0, False)


def test_decode_accepts_text_as_well_as_bytes():
    body = event("case.resolved").to_json()
    assert decode_event(body.decode()) == decode_event(body)


def test_make_event_fills_defaults_of_optional_fields():
    ev = make_event("case.resolved", CASE_ID, {"resolved_at": T0}, producer="p", at=T0)
    assert ev.data == {"resolved_at": T0}
    ack = make_event(
        "assignment.acknowledged", CASE_ID, {"department": "fire", "at": T0}, producer="p", at=T0
    )
    assert ack.data == {"department": "fire", "actor": "", "note": "", "at": T0}


def test_make_event_gives_each_event_a_fresh_uuid_unless_told():
    a, b = event("case.resolved"), event("case.resolved")
    assert a.event_id != b.event_id
    assert uuid.UUID(a.event_id).version == 4
    assert event("case.resolved", event_id="fixed").event_id == "fixed"


def test_make_event_rejects_invalid_data_naming_the_field():
    with pytest.raises(InvalidEvent, match=r"^case.resolved: .*resolved_at.*Missing data"):
        make_event("case.resolved", CASE_ID, {}, producer="p", at=T0)


def test_make_event_rejects_a_naive_datetime_in_data():
    with pytest.raises(InvalidEvent, match="resolved_at"):
        make_event(
            "case.resolved", CASE_ID, {"resolved_at": datetime(2026, 1, 1)}, producer="p", at=T0
        )


def test_make_event_rejects_a_wrongly_typed_value():
    with pytest.raises(InvalidEvent, match=r"^case.resolved: "):
        make_event("case.resolved", CASE_ID, {"resolved_at": "yesterday"}, producer="p", at=T0)


def test_make_event_rejects_unknown_types():
    with pytest.raises(InvalidEvent, match=r"unknown event type 'case\.vanished'"):
        make_event("case.vanished", CASE_ID, {}, producer="p", at=T0)


def test_make_event_drops_fields_the_schema_does_not_know():
    ev = make_event("case.resolved", CASE_ID, {"resolved_at": T0, "x": 1}, producer="p", at=T0)
    assert ev.data == {"resolved_at": T0}


def test_make_event_refuses_a_naive_occurred_at():
    with pytest.raises(InvalidEvent, match="occurred_at"):
        make_event(
            "case.resolved",
            CASE_ID,
            {"resolved_at": T0},
            producer="p",
            at=datetime(2026, 11, 23, 9),
        )


# -- the bytes on the wire (AMQP body) ----------------------------------------------------------


def test_envelope_has_exactly_the_documented_fields():
    raw = wire("case.resolved")
    assert set(raw) == {
        "event_id",
        "type",
        "schema_version",
        "occurred_at",
        "producer",
        "case_id",
        "data",
    }
    assert raw["type"] == "case.resolved"
    assert raw["schema_version"] == 1
    assert raw["occurred_at"] == "2026-11-23T01:00:00+00:00"
    assert raw["data"] == {"resolved_at": "2026-11-23T01:00:00+00:00"}


def test_body_is_compact_utf8_json_with_chinese_unescaped():
    body = event("case.routed").to_json()
    assert isinstance(body, bytes)
    text = body.decode("utf-8")
    assert "消防通道堵塞" in text
    assert "桐梓林社区" in text
    assert "\\u" not in text
    assert "\n" not in text
    assert '", "' not in text and '": ' not in text
    assert text.startswith('{"event_id":"')
    assert json.loads(text) == json.loads(json.dumps(json.loads(text), separators=(",", ":")))


def test_body_of_a_chinese_event_is_smaller_than_the_ascii_escaped_form():
    body = event("case.routed").to_json()
    escaped = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert len(body) < len(escaped)


# -- what decoding rejects, and says -------------------------------------------------------------


def test_non_json_bytes():
    assert decode_error(b"\xff\xfe not json").startswith("body is not JSON: ")
    assert decode_error(b"{oops").startswith("body is not JSON: ")


@pytest.mark.parametrize("body", [[1, 2], "a string", None, 7])
def test_json_that_is_not_an_object(body):
    assert decode_error(json.dumps(body)) == "body is not a JSON object"


@pytest.mark.parametrize(
    "missing", ["event_id", "type", "schema_version", "occurred_at", "producer", "case_id", "data"]
)
def test_missing_envelope_field_is_named(missing):
    raw = wire("case.resolved")
    del raw[missing]
    message = decode_error(raw)
    assert message.startswith("envelope: ")
    assert f"'{missing}': ['Missing data for required field.']" in message


def test_every_missing_envelope_field_is_named_at_once():
    message = decode_error({"type": "case.resolved"})
    for name in ("event_id", "schema_version", "occurred_at", "producer", "case_id", "data"):
        assert f"'{name}'" in message


def test_unknown_type():
    raw = wire("case.resolved") | {"type": "case.teleported"}
    assert decode_error(raw) == "unknown event type 'case.teleported'"


@pytest.mark.parametrize("version", [0, 2, -1])
def test_unsupported_schema_version(version):
    raw = wire("case.resolved") | {"schema_version": version}
    assert decode_error(raw) == (
        f"case.resolved: schema_version {version} is not supported (this consumer reads version 1)"
    )


@pytest.mark.parametrize("version", ["1", 1.0, True])
def test_schema_version_must_be_a_json_integer(version):
    raw = wire("case.resolved") | {"schema_version": version}
    assert "schema_version" in decode_error(raw)
    assert decode_error(raw).startswith("envelope: ")


def test_naive_occurred_at_is_rejected():
    raw = wire("case.resolved") | {"occurred_at": "2026-11-23T09:00:00"}
    assert "occurred_at" in decode_error(raw)


def test_data_must_be_an_object():
    raw = wire("case.resolved") | {"data": ["resolved"]}
    assert "'data'" in decode_error(raw)


def test_public_type_decoded_as_internal():
    raw = wire("case.assigned", public=True)
    assert decode_error(raw) == "unknown event type 'case.assigned'"


def test_internal_type_decoded_as_public():
    raw = wire("case.routed")
    assert decode_error(raw, public=True) == "unknown event type 'case.routed'"


def test_public_escalation_is_not_an_internal_escalation():
    # The same name on both exchanges, with different payloads: each side rejects the other.
    public = wire("case.escalated", public=True)
    assert decode_error(public).startswith("case.escalated: ")
    assert "'reason'" in decode_error(public)
    internal = wire("case.escalated")
    assert "'escalation'" in decode_error(internal, public=True)
    assert "'recipient'" in decode_error(internal, public=True)


def test_unknown_role_is_rejected():
    raw = wire("case.routed")
    raw["data"]["assignments"][1]["role"] = "boss"
    message = decode_error(raw)
    assert message.startswith("case.routed: ")
    assert "'assignments': {1: {'role': ['Must be one of: lead, assist, summoned.']}}" in message


def test_unknown_tier_is_rejected():
    raw = wire("case.routed")
    raw["data"]["tier"]["tier"] = "building"
    assert "'tier': {'tier': ['Must be one of" in decode_error(raw)


def test_unknown_clock_is_rejected():
    raw = wire("case.escalated")
    raw["data"]["missed"][0]["clock"] = "lunch"
    assert "'clock'" in decode_error(raw)


def test_unknown_reporter_kind_is_rejected():
    raw = wire("case.reported")
    raw["data"]["case"]["reporter"]["kind"] = "robot"
    assert "'kind'" in decode_error(raw)


def test_routed_without_assignments_is_rejected():
    raw = wire("case.routed")
    raw["data"]["assignments"] = []
    assert "'assignments': ['Shorter than minimum length 1.']" in decode_error(raw)


def test_escalation_without_missed_clocks_is_rejected():
    raw = wire("case.escalated")
    raw["data"]["missed"] = []
    assert "'missed'" in decode_error(raw)


def test_overlong_event_id_is_rejected():
    raw = wire("case.resolved") | {"event_id": "e" * 65}
    assert "'event_id': ['Length must be between 1 and 64.']" in decode_error(raw)


def test_empty_case_id_is_rejected():
    raw = wire("case.resolved") | {"case_id": ""}
    assert "'case_id'" in decode_error(raw)


def test_overlong_description_is_rejected():
    raw = wire("case.reported")
    raw["data"]["case"]["description"] = "堵" * 2001
    assert "'description': ['Longer than maximum length 2000.']" in decode_error(raw)


def test_description_of_exactly_2000_characters_is_accepted():
    raw = wire("case.reported")
    raw["data"]["case"]["description"] = "堵" * 2000
    assert len(decode_event(json.dumps(raw)).data["case"]["description"]) == 2000


def test_overlong_department_is_rejected():
    raw = wire("case.routed")
    raw["data"]["assignments"][0]["department"] = "d" * 65
    assert "'department'" in decode_error(raw)


def test_empty_report_id_is_rejected():
    raw = wire("case.reported")
    raw["data"]["report_id"] = ""
    assert "'report_id'" in decode_error(raw)


@pytest.mark.parametrize(("field", "value"), [("lat", -91.0), ("lat", 90.5), ("lng", -180.5)])
def test_coordinates_out_of_range_are_rejected(field, value):
    raw = wire("case.reported")
    raw["data"]["case"]["location"][field] = value
    assert f"'{field}'" in decode_error(raw)


@pytest.mark.parametrize("code", ["51180200100110", "5118020010011010", "511802001001101001"])
def test_grid_code_must_be_fifteen_characters(code):
    raw = wire("case.reported")
    raw["data"]["case"]["location"]["grid_code"] = code
    assert "'grid_code': ['Length must be 15.']" in decode_error(raw)


@pytest.mark.parametrize("url", ["not a url", "javascript:alert(1)", "//m.example.com/x.jpg"])
def test_bad_media_url_is_rejected(url):
    raw = wire("case.reported")
    raw["data"]["case"]["media_urls"] = ["https://m.example.com/ok.jpg", url]
    assert "'media_urls': {1: ['Not a valid URL.']}" in decode_error(raw)


def test_more_than_ten_media_urls_are_rejected():
    raw = wire("case.reported")
    raw["data"]["case"]["media_urls"] = [f"https://m.example.com/{i}.jpg" for i in range(11)]
    assert "'media_urls'" in decode_error(raw)


def test_naive_datetime_in_data_is_rejected():
    raw = wire("case.resolved")
    raw["data"]["resolved_at"] = "2026-11-23T09:00:00"
    assert decode_error(raw) == "case.resolved: {'resolved_at': ['Not a valid aware datetime.']}"


# -- tiered response: severity, policies, whistles, reminders, the ledger -----------------------


def test_test_data_covers_every_event():
    assert set(INTERNAL_DATA) == set(INTERNAL)
    assert set(PUBLIC_DATA) == set(PUBLIC)


def test_an_unknown_severity_is_rejected():
    raw = wire("case.reported")
    raw["data"]["case"]["severity"] = "critical"
    assert "'severity': ['Must be one of: normal, urgent.']" in decode_error(raw)


def test_routed_without_a_policy_is_rejected():
    raw = wire("case.routed")
    del raw["data"]["policy"]
    assert "'policy': ['Missing data for required field.']" in decode_error(raw)


def test_a_policy_without_steps_is_rejected():
    raw = wire("case.routed")
    raw["data"]["policy"]["steps"] = []
    assert "'steps': ['Shorter than minimum length 1.']" in decode_error(raw)


def test_a_policy_starting_below_the_cells_is_rejected():
    raw = wire("case.routed")
    raw["data"]["policy"]["start"] = "building"
    assert "'policy': {'start': ['Must be one of" in decode_error(raw)


@pytest.mark.parametrize(
    ("field", "value"),
    [("tier", "building"), ("notify", ["mayor"]), ("repeat", 11), ("repeat", -1)],
)
def test_a_bad_policy_step_is_rejected(field, value):
    raw = wire("case.routed")
    raw["data"]["policy"]["steps"][1][field] = value
    message = decode_error(raw)
    assert message.startswith("case.routed: {'policy': {'steps': {1: {")
    assert f"'{field}'" in message


def test_policy_whistle_terms_for_an_unknown_level_are_rejected():
    raw = wire("case.routed")
    raw["data"]["policy"]["whistle"]["loud"] = {"report_in": "1m", "resolve": "1h"}
    assert "'whistle'" in decode_error(raw)


@pytest.mark.parametrize("type_", ["case.whistled", "assignments.added"])
def test_an_unknown_whistle_level_is_rejected(type_):
    raw = wire(type_)
    raw["data"]["level"] = "loud"
    assert decode_error(raw) == f"{type_}: {{'level': ['Must be one of: routine, hard.']}}"


@pytest.mark.parametrize("count", [0, 21])
def test_a_whistle_names_one_to_twenty_departments(count):
    raw = wire("case.whistled")
    raw["data"]["departments"] = [f"dept_{i}" for i in range(count)]
    assert "'departments': ['Length must be between 1 and 20.']" in decode_error(raw)


def test_a_whistle_of_twenty_departments_is_accepted():
    data = INTERNAL_DATA["case.whistled"] | {"departments": [f"dept_{i}" for i in range(20)]}
    assert len(event("case.whistled", data=data).data["departments"]) == 20


def test_a_whistle_by_a_nameless_operator_of_an_unknown_tier_is_rejected():
    raw = wire("case.whistled")
    raw["data"]["by"] = {"name": "", "tier": "village"}
    message = decode_error(raw)
    assert "'by': {" in message
    assert "'name'" in message and "'tier'" in message


def test_assignments_added_with_neither_assignments_nor_already_is_rejected():
    raw = wire("assignments.added")
    raw["data"]["assignments"] = []
    raw["data"]["already"] = []
    assert decode_error(raw) == (
        "assignments.added: {'_schema': ['at least one department is added or named']}"
    )
    data = INTERNAL_DATA["assignments.added"] | {"assignments": [], "already": []}
    with pytest.raises(InvalidEvent, match="at least one department"):
        event("assignments.added", data=data)


@pytest.mark.parametrize("empty", ["assignments", "already"])
def test_assignments_added_needs_only_one_of_assignments_or_already(empty):
    data = INTERNAL_DATA["assignments.added"] | {empty: []}
    got = decode_event(event("assignments.added", data=data).to_json())
    assert got.data[empty] == []
    assert got.data["assignments"] or got.data["already"]


def test_assignments_added_defaults_already_and_raise_to():
    raw = wire("assignments.added")
    del raw["data"]["already"], raw["data"]["raise_to"], raw["data"]["note"]
    got = decode_event(json.dumps(raw))
    assert (got.data["already"], got.data["raise_to"], got.data["note"]) == ([], None, "")


def test_departments_are_added_for_one_of_four_reasons():
    raw = wire("assignments.added")
    raw["data"]["reason"] = "bribe"
    assert decode_error(raw) == (
        "assignments.added: {'reason': ['Must be one of: whistle, assist, reroute, manual.']}"
    )


NOT_A_WHISTLE = {
    "reason": "reroute",
    "requested_by": "routing",
    "note": "fire returned it: needs_other_department",
    "assignments": [ASSIGNMENT | {"department": "traffic"}],
    "replaces": "fire",
    "case": SUMMARY,
    "added_at": T0,
}


@pytest.mark.parametrize("reason", ["assist", "reroute", "manual"])
def test_departments_added_other_than_by_a_whistle_need_no_level_operator_or_whistler(reason):
    got = decode_event(event("assignments.added", data=NOT_A_WHISTLE | {"reason": reason})
                       .to_json())
    assert got.data["reason"] == reason
    assert (got.data["level"], got.data["by"], got.data["whistler"], got.data["raise_to"]) == (
        None, None, None, None
    )
    assert (got.data["requested_by"], got.data["replaces"], got.data["already"]) == (
        "routing", "fire", []
    )
    assert got.data["assignments"][0]["department"] == "traffic"


def test_the_requester_and_the_replaced_department_default_to_nobody():
    data = {k: v for k, v in NOT_A_WHISTLE.items() if k not in ("requested_by", "replaces")}
    got = decode_event(event("assignments.added", data=data | {"reason": "manual"}).to_json())
    assert (got.data["requested_by"], got.data["replaces"]) == ("", None)


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        (("level",), "a whistle gives level"),
        (("by",), "a whistle gives by"),
        (("whistler",), "a whistle gives whistler"),
        (("level", "by", "whistler"), "a whistle gives level, by, whistler"),
    ],
)
def test_a_whistle_gives_its_level_operator_and_whistler(missing, message):
    raw = wire("assignments.added")
    for name in missing:
        del raw["data"][name]
    assert decode_error(raw) == f"assignments.added: {{'_schema': ['{message}']}}"
    data = {k: v for k, v in INTERNAL_DATA["assignments.added"].items() if k not in missing}
    with pytest.raises(InvalidEvent, match=message):
        event("assignments.added", data=data)


def test_a_whistle_with_null_level_is_refused_like_a_missing_one():
    raw = wire("assignments.added")
    raw["data"]["level"] = None
    assert decode_error(raw) == "assignments.added: {'_schema': ['a whistle gives level']}"


def test_a_reroute_names_the_department_it_replaces_by_a_department_code():
    raw = json.loads(event("assignments.added", data=NOT_A_WHISTLE).to_json())
    raw["data"]["replaces"] = "f" * 65
    assert "'replaces': ['Length must be between 1 and 64.']" in decode_error(raw)


def test_a_missed_clocks_next_due_is_optional():
    raw = wire("case.escalated")
    del raw["data"]["missed"][0]["next_due"]
    assert decode_event(json.dumps(raw)).data["missed"][0]["next_due"] is None
    raw["data"]["missed"][0]["next_due"] = None  # the clock stopped
    assert decode_event(json.dumps(raw)).data["missed"][0]["next_due"] is None


def test_a_missed_clocks_next_due_must_be_aware():
    raw = wire("case.escalated")
    raw["data"]["missed"][0]["next_due"] = "2026-11-23T09:46:00"
    assert "'next_due': ['Not a valid aware datetime.']" in decode_error(raw)


@pytest.mark.parametrize("type_", ["case.escalated", "case.reminded"])
def test_a_notice_needs_its_step(type_):
    raw = wire(type_)
    del raw["data"]["step"]
    assert "'step': ['Missing data for required field.']" in decode_error(raw)
    raw["data"]["step"] = -1
    assert "'step'" in decode_error(raw)


def test_escalation_notify_is_an_object_not_a_list_of_departments():
    raw = wire("case.escalated")
    raw["data"]["notify"] = ["fire", "police"]
    assert "'notify': {'_schema': ['Invalid input type.']}" in decode_error(raw)


def test_notify_lists_default_to_empty():
    raw = wire("case.escalated")
    raw["data"]["notify"] = {}
    assert decode_event(json.dumps(raw)).data["notify"] == {"departments": [], "tiers": []}


@pytest.mark.parametrize("role", ["mayor", None, "(left out)"])
def test_a_notified_tier_needs_the_owner_or_supervisor_role(role):
    raw = wire("case.escalated")
    if role == "(left out)":
        del raw["data"]["notify"]["tiers"][0]["role"]
    else:
        raw["data"]["notify"]["tiers"][0]["role"] = role
    assert "'notify': {'tiers': {0: {'role'" in decode_error(raw)


def test_a_reminders_missed_and_exhausted_clocks_are_optional():
    raw = wire("case.reminded")
    del raw["data"]["missed"], raw["data"]["exhausted"]
    got = decode_event(json.dumps(raw))
    assert (got.data["missed"], got.data["exhausted"]) == ([], [])


def test_public_notices_need_a_recipient_of_a_known_kind():
    for type_ in ("case.escalated", "case.reminded", "case.whistled", "case.progress",
                  "task.assigned", "case.needs_dispatch", "case.reworked"):
        raw = wire(type_, public=True)
        del raw["data"]["recipient"]
        assert "'recipient': ['Missing data for required field.']" in decode_error(raw, public=True)
        raw["data"]["recipient"] = {"kind": "robot"}
        assert "'recipient': {'kind': ['Must be one of: department, tier.']}" in decode_error(
            raw, public=True
        )


def test_a_tier_recipient_carries_the_node_and_its_role():
    got = decode_event(event("case.reminded", public=True).to_json(), public=True)
    recipient = got.data["recipient"]
    assert recipient["kind"] == "tier"
    assert (recipient["tier"]["code"], recipient["tier"]["role"]) == ("511802001", "owner")
    assert got.data["department"] is None


def test_an_assigned_message_may_carry_the_whistle_that_summoned_it():
    data = PUBLIC_DATA["case.assigned"] | {
        "department": "sanitation",
        "assignment": SUMMONED,
        "whistle": WHISTLE_INFO,
    }
    got = decode_event(event("case.assigned", data=data, public=True).to_json(), public=True)
    assert got.data["whistle"] == WHISTLE_INFO
    assert got.data["assignment"]["role"] == "summoned"
    with pytest.raises(InvalidEvent, match="'whistle'"):
        event("case.assigned", data=data | {"whistle": {"level": "loud"}}, public=True)


def test_an_extension_decision_needs_its_approver_and_an_answer():
    raw = wire("extension.decided")
    del raw["data"]["approver"], raw["data"]["approved"]
    message = decode_error(raw)
    assert "'approver': ['Missing data for required field.']" in message
    assert "'approved': ['Missing data for required field.']" in message


def test_a_pause_needs_a_reason():
    raw = wire("assignment.paused")
    raw["data"]["reason"] = ""
    assert "'reason'" in decode_error(raw)


@pytest.mark.parametrize("type_", ["supervision.opened", "supervision.closed"])
def test_the_ledger_changes_at_least_one_item(type_):
    raw = wire(type_)
    raw["data"]["items"] = []
    assert decode_error(raw) == f"{type_}: {{'items': ['Shorter than minimum length 1.']}}"


def test_a_ledger_item_is_a_known_clock():
    raw = wire("supervision.opened")
    raw["data"]["items"][0]["kind"] = "lunch"
    assert "'items': {0: {'kind'" in decode_error(raw)


# -- the closed loop: requests, returns, progress, tasks, verification, rating, duplicates -------


def test_a_reporters_webhook_is_optional_and_must_be_http():
    raw = wire("case.reported")
    del raw["data"]["case"]["reporter"]["webhook_url"]
    assert decode_event(json.dumps(raw)).data["case"]["reporter"]["webhook_url"] is None
    raw["data"]["case"]["reporter"]["webhook_url"] = "ftp://app.example.com/hook"
    assert "'webhook_url': ['Not a valid URL.']" in decode_error(raw)
    raw["data"]["case"]["reporter"]["webhook_url"] = "http://app.example.com/hook"
    got = decode_event(json.dumps(raw)).data["case"]["reporter"]["webhook_url"]
    assert got == "http://app.example.com/hook"


@pytest.mark.parametrize("type_", ["assignment.returned", "case.needs_dispatch"])
def test_a_return_needs_a_known_reason_code(type_):
    raw = wire(type_)
    returned = raw["data"]["returned"] if type_ == "case.needs_dispatch" else raw["data"]
    returned["reason_code"] = "too_busy"
    assert (
        "'reason_code': ['Must be one of: not_our_responsibility, wrong_location, duplicate, "
        "needs_other_department, cannot_handle, other.']"
    ) in decode_error(raw)
    del returned["reason_code"]
    assert "'reason_code': ['Missing data for required field.']" in decode_error(raw)


def test_a_public_needs_dispatch_notice_checks_the_return_it_carries():
    raw = wire("case.needs_dispatch", public=True)
    raw["data"]["returned"]["role"] = "boss"
    assert decode_error(raw, public=True) == (
        "case.needs_dispatch: {'returned': {'role': ['Must be one of: lead, assist, summoned.']}}"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("role", "summoned", "'role': ['Must be one of: lead, assist.']"),
        ("kind", "reroute", "'kind': ['Must be one of: assist, manual.']"),
        ("requested_by", "", "'requested_by': ['Length must be between 1 and 100.']"),
    ],
)
def test_a_request_is_for_a_lead_or_an_assist_by_someone(field, value, message):
    raw = wire("assignment.requested")
    raw["data"][field] = value
    assert decode_error(raw) == f"assignment.requested: {{{message}}}"


def test_progress_needs_a_note():
    raw = wire("assignment.progressed")
    raw["data"]["note"] = ""
    assert decode_error(raw) == (
        "assignment.progressed: {'note': ['Length must be between 1 and 2000.']}"
    )
    del raw["data"]["note"]
    assert "'note': ['Missing data for required field.']" in decode_error(raw)


def test_progress_media_are_urls_and_at_most_ten():
    raw = wire("assignment.progressed")
    raw["data"]["media_urls"] = ["not a url"]
    assert "'media_urls': {0: ['Not a valid URL.']}" in decode_error(raw)
    raw["data"]["media_urls"] = [f"https://m.example.com/{i}.jpg" for i in range(11)]
    assert "'media_urls': ['Longer than maximum length 10.']" in decode_error(raw)


@pytest.mark.parametrize("public", [False, True])
def test_a_task_is_a_verification_or_a_follow_up(public):
    type_ = "task.assigned" if public else "task.created"
    raw = wire(type_, public=public)
    raw["data"]["task"]["kind"] = "lunch"
    assert decode_error(raw, public=public) == (
        f"{type_}: {{'task': {{'kind': ['Must be one of: verification, follow_up.']}}}}"
    )


def test_a_task_names_its_assignee():
    raw = wire("task.created")
    del raw["data"]["task"]["assignee"]
    assert decode_error(raw) == (
        "task.created: {'task': {'assignee': ['Missing data for required field.']}}"
    )


def test_a_follow_up_task_may_be_due():
    data = INTERNAL_DATA["task.created"] | {
        "task": TASK | {"kind": "follow_up", "due_at": T0 + timedelta(days=3)}
    }
    got = decode_event(event("task.created", data=data).to_json())
    assert (got.data["task"]["kind"], got.data["task"]["due_at"]) == (
        "follow_up", T0 + timedelta(days=3)
    )


def test_a_verification_names_who_checked_and_whether_it_passed():
    raw = wire("case.verified")
    del raw["data"]["by"], raw["data"]["passed"]
    message = decode_error(raw)
    assert "'by': ['Missing data for required field.']" in message
    assert "'passed': ['Missing data for required field.']" in message


def test_a_passed_verification_reworks_nobody_by_default():
    data = {"passed": True, "by": GRID_WORKER, "at": T0}
    got = decode_event(event("case.verified", data=data).to_json())
    assert got.data == {"passed": True, "by": GRID_WORKER, "note": "", "media_urls": [],
                        "rework": [], "at": T0}


@pytest.mark.parametrize("missing", ["closed_at", "rate_until", "follow_up_at", "grid_code"])
def test_a_closed_case_says_when_and_where(missing):
    raw = wire("case.closed")
    del raw["data"][missing]
    assert decode_error(raw) == (
        f"case.closed: {{'{missing}': ['Missing data for required field.']}}"
    )


@pytest.mark.parametrize("type_", ["case.closed", "followup.due"])
def test_a_closed_case_and_a_follow_up_name_the_cell(type_):
    raw = wire(type_)
    raw["data"]["grid_code"] = "511802001001"  # a community
    assert decode_error(raw) == f"{type_}: {{'grid_code': ['Length must be 15.']}}"


def test_a_case_is_reopened_for_a_known_cause():
    raw = wire("case.reopened")
    raw["data"]["cause"] = "whim"
    assert decode_error(raw) == (
        "case.reopened: {'cause': ['Must be one of: verification, rating, operator.']}"
    )


def test_a_reopened_case_names_at_least_one_department():
    raw = wire("case.reopened")
    raw["data"]["departments"] = []
    assert decode_error(raw) == (
        "case.reopened: {'departments': ['Shorter than minimum length 1.']}"
    )


@pytest.mark.parametrize("score", [0, 6, -1])
def test_a_score_is_one_to_five(score):
    raw = wire("case.rated")
    raw["data"]["score"] = score
    assert decode_error(raw) == (
        "case.rated: {'score': ['Must be greater than or equal to 1 and less than or equal to 5.']}"
    )


@pytest.mark.parametrize("score", [1, 5])
def test_the_scores_at_the_ends_are_accepted(score):
    data = INTERNAL_DATA["case.rated"] | {"score": score}
    assert decode_event(event("case.rated", data=data).to_json()).data["score"] == score


def test_a_rating_says_whether_it_reopens_and_may_leave_fixed_out():
    raw = wire("case.rated")
    del raw["data"]["fixed"], raw["data"]["comment"]
    got = decode_event(json.dumps(raw))
    assert (got.data["fixed"], got.data["comment"]) == (None, "")
    del raw["data"]["reopens"]
    assert decode_error(raw) == "case.rated: {'reopens': ['Missing data for required field.']}"


@pytest.mark.parametrize("type_", ["reporter.attached", "reporter.detached"])
def test_a_follower_is_a_reporter_of_a_known_kind(type_):
    raw = wire(type_)
    raw["data"]["reporter"]["kind"] = "robot"
    assert "'reporter': {'kind': ['Must be one of:" in decode_error(raw)


def test_an_attached_reporter_comes_with_its_report():
    raw = wire("reporter.attached")
    raw["data"]["report_id"] = ""
    assert decode_error(raw) == (
        "reporter.attached: {'report_id': ['Length must be between 1 and 64.']}"
    )


# -- tolerant reader --------------------------------------------------------------------------


def test_unknown_fields_are_tolerated_everywhere():
    raw = wire("case.routed")
    raw["trace_id"] = "abc"
    raw["data"]["priority"] = "high"
    raw["data"]["case"]["weather"] = "rain"
    raw["data"]["case"]["location"]["floor"] = 3
    raw["data"]["assignments"][0]["sla"] = "gold"
    got = decode_event(json.dumps(raw))
    assert got.data["assignments"][0]["department"] == "fire"
    assert "priority" not in got.data
    assert "weather" not in got.data["case"]
    assert "floor" not in got.data["case"]["location"]
    assert "sla" not in got.data["assignments"][0]


def test_optional_fields_may_be_left_out():
    raw = wire("case.routed")
    for name in ("category_name", "severity", "media_urls", "occurred_at"):
        del raw["data"]["case"][name]
    del raw["data"]["catalogue_version"]
    del raw["data"]["policy"]["version"]
    del raw["data"]["policy"]["severity"]
    got = decode_event(json.dumps(raw))
    assert got.data["case"]["severity"] == "normal"
    assert got.data["case"]["media_urls"] == []
    assert got.data["case"]["occurred_at"] is None
    assert got.data["catalogue_version"] == ""
    assert (got.data["policy"]["version"], got.data["policy"]["severity"]) == ("", "normal")


# -- the catalogue itself -----------------------------------------------------------------------


def test_catalogue_names_every_event_once_per_exchange():
    assert set(INTERNAL) == {
        "case.reported",
        "case.routed",
        "case.whistled",
        "assignments.added",
        "case.escalated",
        "case.reminded",
        "assignment.dispatched",
        "assignment.acknowledged",
        "assignment.resolved",
        "assignment.paused",
        "assignment.resumed",
        "assignment.reopened",
        "extension.decided",
        "assignment.rescheduled",
        "case.tier_changed",
        "supervision.opened",
        "supervision.closed",
        "case.resolved",
        "assignment.requested",
        "assignment.returned",
        "case.needs_dispatch",
        "assignment.progressed",
        "task.created",
        "case.verified",
        "case.closed",
        "case.reopened",
        "case.rated",
        "followup.due",
        "reporter.attached",
        "reporter.detached",
    }
    assert set(PUBLIC) == {
        "case.assigned",
        "case.escalated",
        "case.reminded",
        "case.whistled",
        "case.progress",
        "case.reworked",
        "task.assigned",
        "case.needs_dispatch",
    }
    assert all(spec.version == 1 for spec in (*INTERNAL.values(), *PUBLIC.values()))
    assert all(spec.description for spec in (*INTERNAL.values(), *PUBLIC.values()))


def test_spec_for_separates_internal_and_public():
    assert spec_for("case.escalated").schema is not spec_for("case.escalated", public=True).schema
    with pytest.raises(InvalidEvent):
        spec_for("case.assigned")
    assert spec_for("case.assigned", public=True).name == "case.assigned"



@pytest.mark.parametrize("recipient", [{"kind": "department"}, {"kind": "tier"},
                                       {"kind": "tier", "department": "fire"}])
def test_a_recipient_names_who_it_is(recipient):
    with pytest.raises(ValidationError, match=f"names its {recipient['kind']}"):
        RecipientSchema().load(recipient)


def test_a_policy_snapshot_has_terms_for_every_whistle_level():
    ref = load_reference(Path(__file__).resolve().parents[2] / "deploy" / "demo")
    snap = ref.policy.snapshot(ref.catalogue.get("E0101"), "normal", ref.grid)
    assert PolicySnapshotSchema().load(snap)["whistle"]["hard"]["raise_to"] == "district"
    with pytest.raises(ValidationError, match="every whistle level"):
        PolicySnapshotSchema().load({**snap, "whistle": {}})
    with pytest.raises(ValidationError):
        PolicySnapshotSchema().load({**snap, "whistle": {"routine": {}, "hard": {}}})
