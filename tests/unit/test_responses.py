"""What a department answers over AMQP (exchange gridflow.responses): the routing key
``<department>.<action>``, the message id it is deduped on, the body of each action, and the
``response.<action>`` event the reliable consumer hands to intake."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.events import RETURN_REASONS, Event, InvalidEvent
from shared.responses import ACTIONS, BODIES, RESPONSE_PREFIX, decode_response

CASE_ID = "20261123-000001"
MESSAGE_ID = "fire-desk-0001"
PHOTO = "https://m.example.com/after.jpg"


def body(**fields: Any) -> bytes:
    return json.dumps({"case_id": CASE_ID, **fields}, ensure_ascii=False).encode()


def decode(routing_key: str = "fire.ack", raw: bytes | None = None,
           message_id: str | None = MESSAGE_ID) -> Event:
    return decode_response(body() if raw is None else raw, routing_key, message_id)


def refused(routing_key: str = "fire.ack", raw: bytes | None = None,
            message_id: str | None = MESSAGE_ID) -> str:
    with pytest.raises(InvalidEvent) as exc:
        decode(routing_key, raw, message_id)
    return str(exc.value)


# -- the event an answer becomes ----------------------------------------------------------------


def test_a_report_in_becomes_a_response_ack_event():
    before = datetime.now(UTC)
    ev = decode("fire.ack", body(actor="fire-desk-1", note="已出警"))
    after = datetime.now(UTC)
    assert (ev.type, ev.case_id, ev.event_id, ev.producer) == (
        "response.ack", CASE_ID, MESSAGE_ID, "department:fire"
    )
    assert ev.data == {"actor": "fire-desk-1", "note": "已出警", "department": "fire"}
    assert (ev.schema_version, ev.public) == (1, False)
    assert before <= ev.occurred_at <= after  # aware: a naive time would not compare
    assert ev.occurred_at.utcoffset().total_seconds() == 0


def test_an_empty_report_in_has_defaults():
    assert decode("police.ack").data == {"actor": "", "note": "", "department": "police"}


def test_progress_carries_its_note_and_media():
    ev = decode("urban_mgmt.progress", body(note="已联系车主", media_urls=[PHOTO]))
    assert ev.type == "response.progress"
    assert ev.data == {"actor": "", "note": "已联系车主", "media_urls": [PHOTO],
                       "department": "urban_mgmt"}
    assert ev.producer == "department:urban_mgmt"


def test_a_resolution_carries_its_note_media_and_actor():
    ev = decode("fire.resolve", body(note="已清理", media_urls=[PHOTO], actor="fire:7"))
    assert ev.type == "response.resolve"
    assert ev.data == {"actor": "fire:7", "note": "已清理", "media_urls": [PHOTO],
                       "department": "fire"}


@pytest.mark.parametrize("code", RETURN_REASONS)
def test_a_return_carries_its_reason_code(code):
    ev = decode("market_supervision.return", body(reason_code=code))
    assert ev.type == "response.return"
    assert ev.data == {"actor": "", "reason_code": code, "note": "",
                       "department": "market_supervision"}


def test_the_department_is_the_routing_keys_not_the_bodys():
    assert "department" not in BODIES["ack"]().fields
    assert refused("fire.ack", body(department="police")) == (
        "ack: {'department': ['Unknown field.']}"
    )


def test_the_case_id_is_the_events_not_part_of_its_data():
    ev = decode("fire.ack")
    assert ev.case_id == CASE_ID
    assert "case_id" not in ev.data


def test_the_actions_and_their_event_types():
    assert ACTIONS == ("ack", "progress", "resolve", "return")
    assert set(BODIES) == set(ACTIONS)
    assert RESPONSE_PREFIX == "response."
    assert [decode(f"fire.{a}", _valid_body(a)).type for a in ACTIONS] == [
        "response.ack", "response.progress", "response.resolve", "response.return"
    ]


def _valid_body(action: str) -> bytes:
    return {"ack": body(), "progress": body(note="进展"), "resolve": body(note="完成"),
            "return": body(reason_code="other")}[action]


# -- the routing key --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["fire", "fire.", "fire.close", ".ack", "ack", "",
                                 "fire.ack.extra", "fire.case.assigned"])
def test_the_routing_key_is_a_department_and_a_known_action(key):
    assert refused(key) == (
        f"routing key {key!r}: use <department>.<action> with action one of "
        "ack, progress, resolve, return"
    )


def test_the_routing_key_is_checked_first():
    assert refused("fire.close", b"not json", None).startswith("routing key 'fire.close'")


# -- the message id -----------------------------------------------------------------------------


@pytest.mark.parametrize("message_id", [None, "", "m" * 65])
def test_a_message_id_is_required(message_id):
    assert refused(message_id=message_id) == (
        "message_id is required (1–64 characters): responses are deduped on it"
    )


def test_a_message_id_of_64_characters_is_the_event_id():
    assert decode(message_id="m" * 64).event_id == "m" * 64


def test_the_message_id_is_checked_before_the_body():
    assert refused(raw=b"not json", message_id=None).startswith("message_id is required")


# -- the body -------------------------------------------------------------------------------


def test_a_body_that_is_not_json_is_refused():
    assert refused(raw=b"{oops").startswith("body is not JSON: ")
    assert refused(raw=b"\xff\xfe").startswith("body is not JSON: ")


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"ack"', b"7", b"null"])
def test_a_body_that_is_not_an_object_is_refused(raw):
    assert refused(raw=raw) == "body is not a JSON object"


@pytest.mark.parametrize("case_id", ["(missing)", "", 42, None, "c" * 65])
def test_a_case_id_is_required(case_id):
    raw = {} if case_id == "(missing)" else {"case_id": case_id}
    assert refused(raw=json.dumps(raw).encode()) == "case_id: a case id is required"


def test_a_case_id_of_64_characters_is_accepted():
    assert decode(raw=json.dumps({"case_id": "c" * 64}).encode()).case_id == "c" * 64


@pytest.mark.parametrize("action", ACTIONS)
def test_unknown_fields_are_refused_for_every_action(action):
    raw = json.loads(_valid_body(action)) | {"priority": "high"}
    assert refused(f"fire.{action}", json.dumps(raw).encode()) == (
        f"{action}: {{'priority': ['Unknown field.']}}"
    )


@pytest.mark.parametrize("action", ["progress", "resolve"])
def test_progress_and_a_resolution_need_a_note(action):
    assert refused(f"fire.{action}", body()) == (
        f"{action}: {{'note': ['Missing data for required field.']}}"
    )
    assert refused(f"fire.{action}", body(note="   ")) == (
        f"{action}: {{'note': ['must not be blank']}}"
    )


def test_a_report_in_and_a_return_may_leave_the_note_out_but_not_overlong():
    assert decode("fire.ack", body(note="")).data["note"] == ""
    assert refused("fire.ack", body(note="长" * 2001)) == (
        "ack: {'note': ['Longer than maximum length 2000.']}"
    )
    assert refused("fire.return", body(reason_code="other", note="长" * 2001)) == (
        "return: {'note': ['Longer than maximum length 2000.']}"
    )


def test_a_return_needs_a_known_reason_code():
    assert refused("fire.return", body()) == (
        "return: {'reason_code': ['Missing data for required field.']}"
    )
    assert refused("fire.return", body(reason_code="too_busy")) == (
        "return: {'reason_code': ['Must be one of: not_our_responsibility, wrong_location, "
        "duplicate, needs_other_department, cannot_handle, other.']}"
    )


@pytest.mark.parametrize("url", ["ftp://m.example.com/a.jpg", "not a url",
                                 "javascript:alert(1)"])
@pytest.mark.parametrize("action", ["progress", "resolve"])
def test_media_are_http_urls(action, url):
    assert refused(f"fire.{action}", body(note="x", media_urls=[PHOTO, url])) == (
        f"{action}: {{'media_urls': {{1: ['Not a valid URL.']}}}}"
    )


def test_at_most_ten_media():
    urls = [f"https://m.example.com/{i}.jpg" for i in range(11)]
    assert refused("fire.resolve", body(note="x", media_urls=urls)) == (
        "resolve: {'media_urls': ['Longer than maximum length 10.']}"
    )
    assert decode("fire.resolve", body(note="x", media_urls=urls[:10])).data["media_urls"] == (
        urls[:10]
    )


def test_an_actor_is_at_most_100_characters():
    assert refused("fire.ack", body(actor="a" * 101)) == (
        "ack: {'actor': ['Longer than maximum length 100.']}"
    )
    assert decode("fire.ack", body(actor="a" * 100)).data["actor"] == "a" * 100


def test_every_field_error_of_a_body_is_named_at_once():
    message = refused("fire.progress", body(note="", media_urls=["x"], extra=1))
    assert message.startswith("progress: {")
    for name in ("'note'", "'media_urls'", "'extra'"):
        assert name in message
