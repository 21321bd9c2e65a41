"""What a department answers about its assignment: report in, progress, resolve, return.

The same schemas serve both doors: intake's HTTP API (``POST …/assignments/<dept>/<action>``)
and the AMQP exchange ``gridflow.responses``, where a department publishes a JSON object
``{"case_id": …, <the action's fields>}`` with routing key ``<department>.<action>`` and a
``message_id`` of its own (a message sent twice is handled once).

A response from the broker becomes an ``Event`` of type ``response.<action>`` so that
gridflow's reliable consumer (validation, dead-lettering with the reason, retries, the
inbox) handles it like any other message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from shared.events import (
    MAX_DESCRIPTION,
    MAX_MEDIA,
    RETURN_REASONS,
    UNSTORABLE,
    Event,
    InvalidEvent,
    json_object,
)

NOT_BLANK = validate.Regexp(r"\s*\S", error="must not be blank")
ACTIONS = ("ack", "progress", "resolve", "return")
RESPONSE_PREFIX = "response."


def _text(required: bool) -> fields.String:
    if required:
        return fields.String(
            required=True, validate=[validate.Length(min=1, max=MAX_DESCRIPTION), NOT_BLANK]
        )
    return fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))


def _media() -> fields.List:
    return fields.List(fields.Url(schemes={"http", "https"}), load_default=list,
                       validate=validate.Length(max=MAX_MEDIA))


class Body(Schema):
    class Meta:
        unknown = RAISE


class AckBody(Body):
    actor = fields.String(load_default="", validate=validate.Length(max=100))
    note = _text(required=False)


class ProgressBody(Body):
    actor = fields.String(load_default="", validate=validate.Length(max=100))
    note = _text(required=True)
    media_urls = _media()


class ResolveBody(Body):
    actor = fields.String(load_default="", validate=validate.Length(max=100))
    note = _text(required=True)
    media_urls = _media()


class ReturnBody(Body):
    actor = fields.String(load_default="", validate=validate.Length(max=100))
    reason_code = fields.String(required=True, validate=validate.OneOf(RETURN_REASONS))
    note = _text(required=False)


BODIES: dict[str, type[Body]] = {
    "ack": AckBody, "progress": ProgressBody, "resolve": ResolveBody, "return": ReturnBody,
}


def decode_response(body: bytes, routing_key: str, message_id: str | None) -> Event:
    """A department's response message as an Event, or InvalidEvent saying what is wrong."""
    department, _, action = routing_key.partition(".")
    if action not in BODIES or not 0 < len(department) <= 64 or UNSTORABLE.search(department):
        raise InvalidEvent(f"routing key {routing_key!r}: use <department>.<action> with action "
                           f"one of {', '.join(ACTIONS)}")
    if (not isinstance(message_id, str) or not 0 < len(message_id) <= 64
            or UNSTORABLE.search(message_id)):
        raise InvalidEvent("message_id is required (1–64 characters): responses are deduped on it")
    raw = json_object(body)
    case_id = raw.pop("case_id", None)
    if not isinstance(case_id, str) or not 0 < len(case_id) <= 64:
        raise InvalidEvent("case_id: a case id is required")
    try:
        data: dict[str, Any] = BODIES[action]().load(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"{action}: {exc.messages}") from exc
    return Event(type=f"{RESPONSE_PREFIX}{action}", case_id=case_id,
                 data={**data, "department": department}, producer=f"department:{department}",
                 occurred_at=datetime.now(UTC), event_id=message_id)
