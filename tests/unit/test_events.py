"""The event catalogue: building, encoding and decoding events, and what decoding rejects."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared.events import (
    INTERNAL,
    PUBLIC,
    Event,
    InvalidEvent,
    decode_event,
    make_event,
    spec_for,
)

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
BEIJING = timezone(timedelta(hours=8))
CASE_ID = "20261123-000001"

SUMMARY: dict[str, Any] = {
    "category": "E0402",
    "category_name": "消防通道堵塞",
    "description": "消防通道被私家车堵塞",
    "location": {
        "grid_code": "511802001001101",
        "grid_name": "通工小区",
        "building_code": "511802001001101001",
        "path": ["雨城区", "青江街道", "桐梓林社区", "桐梓林一片区", "通工小区", "1栋"],
        "lat": 29.9735,
        "lng": 102.9985,
    },
    "reporter": {"kind": "grid_worker", "id": "gw-0001", "name": "邓海燕", "phone": "13800000001"},
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
ASSIGNMENT = {
    "department": "fire",
    "role": "lead",
    "report_in_due": T0 + timedelta(minutes=30),
    "resolve_due": T0 + timedelta(hours=6),
    "report_in": "30m",
    "resolve": "4wh",
}
ESCALATION = {
    "reason": "report_in_missed",
    "missed": [{"department": "fire", "clock": "report_in", "due_at": T0 + timedelta(minutes=30)}],
    "from_tier": TIER,
    "to_tier": TIER | {"tier": "street", "code": "511802001", "name": "青江街道"},
    "notify": ["fire", "police"],
    "escalated_at": T0 + timedelta(minutes=31),
}

INTERNAL_DATA: dict[str, dict[str, Any]] = {
    "case.reported": {"report_id": "r-0001", "case": SUMMARY},
    "case.routed": {
        "case": SUMMARY,
        "tier": TIER,
        "assignments": [ASSIGNMENT, ASSIGNMENT | {"department": "police", "role": "assist"}],
        "catalogue_version": "2026.1",
        "routed_at": T0,
    },
    "case.escalated": ESCALATION,
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
    "case.resolved": {"resolved_at": T0},
}
PUBLIC_DATA: dict[str, dict[str, Any]] = {
    "case.assigned": {
        "department": "fire",
        "assignment": ASSIGNMENT,
        "tier": TIER,
        "case": SUMMARY,
        "links": {"case": "https://g.example/api/v1/cases/1"},
    },
    "case.escalated": {
        "department": "fire",
        "escalation": ESCALATION,
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


def test_unknown_role_is_rejected():
    raw = wire("case.routed")
    raw["data"]["assignments"][1]["role"] = "boss"
    message = decode_error(raw)
    assert message.startswith("case.routed: ")
    assert "'assignments': {1: {'role': ['Must be one of: lead, assist.']}}" in message


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
    for name in ("category_name", "media_urls", "occurred_at"):
        del raw["data"]["case"][name]
    del raw["data"]["catalogue_version"]
    got = decode_event(json.dumps(raw))
    assert got.data["case"]["media_urls"] == []
    assert got.data["case"]["occurred_at"] is None
    assert got.data["catalogue_version"] == ""


# -- the catalogue itself -----------------------------------------------------------------------


def test_catalogue_names_every_event_once_per_exchange():
    assert set(INTERNAL) == {
        "case.reported",
        "case.routed",
        "case.escalated",
        "assignment.dispatched",
        "assignment.acknowledged",
        "assignment.resolved",
        "case.resolved",
    }
    assert set(PUBLIC) == {"case.assigned", "case.escalated"}
    assert all(spec.version == 1 for spec in (*INTERNAL.values(), *PUBLIC.values()))
    assert all(spec.description for spec in (*INTERNAL.values(), *PUBLIC.values()))


def test_spec_for_separates_internal_and_public():
    assert spec_for("case.escalated").schema is not spec_for("case.escalated", public=True).schema
    with pytest.raises(InvalidEvent):
        spec_for("case.assigned")
    assert spec_for("case.assigned", public=True).name == "case.assigned"
