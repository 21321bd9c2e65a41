"""What the fuzzing found, pinned one by one (each failed before its fix), on SQLite and
PostgreSQL: intake alone behind HTTP, and the front doors' decoders."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import amqp
import kombu
import pytest
import requests
from fuzz_support import DbState

from services.escalation.service import EscalationService
from services.intake.bodies import ExtensionBody
from services.intake.service import IntakeService
from services.routing.service import RoutingService
from shared.amqp import topology as topo
from shared.events import InvalidEvent, decode_event, make_event, unstorable
from shared.responses import decode_response
from support import DEMO_CELL, get_messages, report, wait_for

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def intake(run_services: Any) -> Any:
    return run_services(IntakeService)["intake"]


def _post(api: requests.Session, path: str, body: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api.post(path, data=data, headers={"Content-Type": "application/json"})


# -- HTTP -------------------------------------------------------------------------------------
WORKER = {"name": "邓海燕", "tier": "compound", "code": "511802001001101"}
RANGE = ["must lie between 1970-01-01 and 2200-01-01 (UTC)"]
# (why, method, path, body, status, the errors' key or None)
HTTP_FINDINGS: list[tuple[str, str, str, Any, int, str | None]] = [
    # json.loads raised RecursionError, not a ValueError: a 500
    ("nested lists", "POST", "/api/v1/reports", DEEP, 400, "_body"),
    ("nested objects", "POST", "/api/v1/reports", b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
     400, "_body"),
    # PostgreSQL refuses text with a NUL character: a 500 there
    ("NUL case id", "GET", "/api/v1/cases/%00", None, 404, "case_id"),
    ("NUL public case id", "GET", "/api/v1/public/cases/20261123-000001%00", None, 404,
     "case_id"),
    ("NUL case id, action", "POST", "/api/v1/cases/a%00b/assignments/fire/ack", {}, 404,
     "case_id"),
    ("NUL department", "POST", "/api/v1/cases/20261123-000001/assignments/%00/pause",
     {"reason": "x"}, 404, "department"),
    ("NUL query value", "GET", "/api/v1/cases?department=%00", None, 422, "department"),
    ("NUL query key", "GET", "/api/v1/cases?state=open&%00=1", None, 422, "_query"),
    # SQLite cannot bind an integer beyond 64 bits (OverflowError): a 500 there
    ("task id 2**64", "POST", f"/api/v1/tasks/{2**64}/done", {"by": WORKER}, 404, "task_id"),
    ("task id 40 digits", "POST", f"/api/v1/tasks/{'9' * 40}/done", {"by": WORKER}, 404,
     "task_id"),
    # a NUL: a 500 on PostgreSQL, kept as is on SQLite; a lone surrogate cannot be encoded
    # for either (a 500 on both)
    ("NUL description", "POST", "/api/v1/reports",
     report("nul-1", description="消防通道\x00被堵"), 422, "description"),
    ("NUL reporter name", "POST", "/api/v1/reports",
     report("nul-2", reporter={"kind": "resident", "name": "a\x00"}), 422, "reporter.name"),
    ("surrogate description", "POST", "/api/v1/reports",
     report("nul-3", description="\ud800"), 422, "description"),
    ("surrogate media url", "POST", "/api/v1/reports",
     report("nul-4", media_urls=["https://img.example/\udfff.jpg"]), 422, "media_urls.0"),
    ("NUL field name", "POST", "/api/v1/reports", {**report("nul-5"), "\x00": 1}, 422, "\x00"),
    # in UTC this is year 0: converting it overflowed, a 500
    ("year 0 in UTC", "POST", "/api/v1/reports",
     report("edge-1", occurred_at="0001-01-01T00:00:00+14:00"), 422, "occurred_at"),
    ("year 10000 in UTC", "POST", "/api/v1/reports",
     report("edge-2", occurred_at="9999-12-31T23:59:59-14:00"), 422, "occurred_at"),
]


def test_what_the_fuzzing_found_over_http_is_refused_and_keeps_nothing(
    intake: Any, api: requests.Session
) -> None:
    state = DbState(intake)
    api.auth_header()  # the session's admin key is in intake's database before the state
    before = state()
    for why, method, path, body, status, key in HTTP_FINDINGS:
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(
            body).encode()
        r = api.request(method, path, data=data, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (why, r.status_code, r.text[:500])
        if key is not None:
            assert key in r.json()["errors"], (why, r.json())
        assert state() == before, why
    r = _post(api, "/api/v1/reports", report("edge-3", occurred_at="9999-12-31T23:59:59-14:00"))
    assert r.json()["errors"]["occurred_at"] == RANGE


def test_an_extension_is_kept_as_the_durations_short_form() -> None:
    """" 0000000000000000002d" is two days, and was stored as written: longer than the
    column (a 500 on PostgreSQL)."""
    body = ExtensionBody().load({"extend_by": " 0000000000000000002 d ", "reason": "材料未到"})
    assert body["extend_by"] == "2d"


# -- AMQP decoders ----------------------------------------------------------------------------
def test_a_message_nested_deeper_than_the_decoder_goes_is_an_invalid_event() -> None:
    """RecursionError escaped the consumer's decoding: not dead-lettered, the consumer hurt."""
    with pytest.raises(InvalidEvent, match="nested too deeply"):
        decode_event(DEEP)
    with pytest.raises(InvalidEvent, match="nested too deeply"):
        decode_response(b'{"case_id":' + DEEP + b"}", "fire.ack", "m-1")


@pytest.mark.parametrize("body", [
    {"case_id": "20261123-000001", "note": "a\x00b"},
    {"case_id": "20261123-000001\x00"},
    {"case_id": "20261123-000001", "actor": "\ud800"},
])
def test_a_response_with_text_no_database_keeps_is_an_invalid_event(body: dict) -> None:
    with pytest.raises(InvalidEvent, match="NUL"):
        decode_response(json.dumps(body).encode(), "fire.ack", "m-1")


@pytest.mark.parametrize(("routing_key", "message_id"), [
    ("fi\x00re.ack", "m-1"), ("x" * 65 + ".ack", "m-1"), ("fire.ack", "m\x00"),
])
def test_a_response_with_an_odd_department_or_message_id_is_an_invalid_event(
    routing_key: str, message_id: str
) -> None:
    with pytest.raises(InvalidEvent):
        decode_response(b'{"case_id": "20261123-000001"}', routing_key, message_id)


def _envelope(type_: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"event_id": "e-1", "type": type_, "schema_version": 1,
                       "occurred_at": "2026-11-23T01:00:00+00:00", "producer": "intake",
                       "case_id": "20261123-000001", "data": data}).encode()


AT = "2026-11-23T01:00:00+00:00"
OPERATOR = {"name": "李娜", "tier": "street", "code": "511802001"}


@pytest.mark.parametrize(("type_", "data", "field"), [
    # escalation stored the department in a 64-character column: a DataError on PostgreSQL,
    # retried and dead-lettered as "failed n times" rather than refused at once
    ("assignment.acknowledged", {"department": "sanitation" * 40, "at": AT}, "department"),
    ("assignment.resolved", {"department": "", "at": AT}, "department"),
    ("assignment.acknowledged", {"department": "fire", "actor": "x" * 101, "at": AT}, "actor"),
    ("assignment.dispatched", {"department": "fire", "role": "lead", "routing_key": "f.x",
                               "message_id": "m" * 65, "dispatched_at": AT}, "message_id"),
    # escalation parsed the duration in its handler: a ValueError, retried
    ("extension.decided", {"extension_id": 1, "department": "fire", "approved": True,
                           "extend_by": "soon", "approver": OPERATOR, "at": AT}, "extend_by"),
    ("extension.decided", {"extension_id": 2**64, "department": "fire", "approved": True,
                           "extend_by": "1d", "approver": OPERATOR, "at": AT}, "extension_id"),
])
def test_an_event_that_no_service_can_store_is_an_invalid_event(
    type_: str, data: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidEvent, match=field):
        decode_event(_envelope(type_, data))
    decode_event(_envelope(type_, {**data, field: {
        "department": "fire", "actor": "王", "message_id": "m-1", "extend_by": "1d",
        "extension_id": 1}[field]}))  # and with that field right, it is valid


def test_unstorable_names_the_field() -> None:
    assert unstorable({"a": [{"b": "x\x00"}]}) == "a.0.b"
    assert unstorable({"ok": ["fine", 1, None, {"k": "v"}]}) is None
    assert unstorable("\ud800") == ""


# -- AMQP, against a running service ----------------------------------------------------------
def _publish(amqp_uri: str, queue: str, body: bytes, **props: Any) -> None:
    with kombu.Connection(amqp_uri) as conn:
        conn.channel().basic_publish(amqp.Message(body, **props), exchange="",
                                     routing_key=queue)


def test_a_message_nested_too_deep_is_dead_lettered_and_the_consumer_goes_on(
    run_services: Any, service_config: dict[str, Any], rabbit_config: dict[str, Any]
) -> None:
    """RecursionError is no InvalidEvent: it escaped the consumer's decoding, so the message
    was neither dead-lettered nor acked. Now it is dead-lettered with the reason, and the
    service stays up. And an event for a case escalation has not seen routed waits for it
    (RetryLater), like every other such event, rather than failing with a LookupError."""
    up = run_services(EscalationService, config={**service_config, "GRIDFLOW_MAX_ATTEMPTS": 1})
    amqp_uri = rabbit_config["AMQP_URI"]
    _publish(amqp_uri, "gridflow.escalation", DEEP, message_id="deep-1")
    at = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    added = make_event("assignments.added", "20991231-000001", {
        "reason": "assist", "requested_by": "fire", "added_at": at,
        "assignments": [{"department": "gas", "role": "assist", "report_in_due": at,
                         "resolve_due": at}],
        "case": {"category": "E0402", "description": "x", "reported_at": at,
                 "location": {"grid_code": DEMO_CELL}, "reporter": {"kind": "resident"}},
    }, producer="routing", at=at)
    _publish(amqp_uri, "gridflow.escalation", added.to_json(), message_id=added.event_id)
    dead: list[Any] = []
    wait_for(lambda: dead.extend(get_messages(amqp_uri, "gridflow.escalation.dlq")) or
             len(dead) >= 2, what="both dead-lettered")
    reasons = {m.properties["message_id"]: m.headers[topo.H_REASON] for m in dead}
    assert "nested too deeply" in reasons["deep-1"]
    assert "last: RetryLater: assignments added to case" in reasons[added.event_id]
    assert not up["escalation"]._died.ready()


def test_an_odd_attempts_header_on_a_failing_message_does_not_kill_the_service(
    run_services: Any, service_config: dict[str, Any], rabbit_config: dict[str, Any]
) -> None:
    """A valid event routing must wait on (RetryLater: the case is not routed yet) with an
    ``x-gridflow-attempts`` header that is no number: the consumer's failure path raised
    ValueError, and the routing container died with the message unacked. Whatever the
    header says, the message is to be dead-lettered (here after one attempt) and the
    service to stay up."""
    up = run_services(RoutingService,
                      config={**service_config, "GRIDFLOW_MAX_ATTEMPTS": 1})
    at = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    ev = make_event("case.whistled", "20991231-000001", {
        "level": "routine", "departments": ["housing"], "whistled_at": at,
        "by": {"name": "胡涛", "tier": "community", "code": "511802001001"}},
        producer="intake", at=at)
    amqp_uri = rabbit_config["AMQP_URI"]
    _publish(amqp_uri, "gridflow.routing", ev.to_json(), message_id=ev.event_id,
             application_headers={topo.H_ATTEMPTS: "abc"})
    dead = wait_for(lambda: get_messages(amqp_uri, "gridflow.routing.dlq") or
                    up["routing"]._died.ready(), timeout=5, what="dead-lettered")
    assert not up["routing"]._died.ready(), "the routing service died"
    assert dead[0].properties["message_id"] == ev.event_id
