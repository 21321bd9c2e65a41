"""The event catalogue: every event gridflow publishes, its schema and its version.

One envelope for all of them, internal (exchange ``gridflow.events``) and public
(exchange ``gridflow.dispatch``)::

    {"event_id": "<uuid>", "type": "case.routed", "schema_version": 1,
     "occurred_at": "2026-11-23T01:00:00+00:00", "producer": "routing",
     "case_id": "20261123-000001", "data": {...}}

On the wire the AMQP properties repeat what consumers route and dedupe on:
``message_id`` = ``event_id``, ``type`` = the event name, ``content_type`` =
``application/json``, persistent delivery, and a ``schema_version`` header.

Commands are imperative, events are past tense: everything here happened already.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from shared.grid import CANONICAL_LEVELS

REPORTER_KINDS = ("grid_worker", "resident", "hotline", "app", "department", "other")
ROLES = ("lead", "assist")
TIERS = tuple(t for t in CANONICAL_LEVELS if t != "building")
CLOCK_KINDS = ("report_in", "resolve")
MAX_DESCRIPTION = 2000
MAX_MEDIA = 10


class InvalidEvent(ValueError):
    """A message that is not a valid gridflow event; the text says why."""


# -- shared parts -----------------------------------------------------------------------------
class _Tolerant(Schema):
    """Event payloads ignore unknown fields (tolerant reader) but check every known one."""

    class Meta:
        unknown = EXCLUDE


class ReporterSchema(_Tolerant):
    kind = fields.String(required=True, validate=validate.OneOf(REPORTER_KINDS))
    id = fields.String(load_default="", validate=validate.Length(max=64))
    name = fields.String(load_default="", validate=validate.Length(max=64))
    phone = fields.String(load_default="", validate=validate.Length(max=32))


class OwnerSchema(_Tolerant):
    id = fields.String(load_default="")
    name = fields.String(load_default="")
    role = fields.String(load_default="")
    phone = fields.String(load_default="")


class LocationSchema(_Tolerant):
    grid_code = fields.String(required=True, validate=validate.Length(equal=15))
    grid_name = fields.String(load_default="")
    building_code = fields.String(load_default=None, allow_none=True)
    path = fields.List(fields.String(), load_default=list)  # names, district first
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-90, 90))
    lng = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-180, 180))


class CaseSummarySchema(_Tolerant):
    """What a department needs to act: carried on case.routed and on dispatch."""

    category = fields.String(required=True)
    category_name = fields.String(load_default="")
    description = fields.String(required=True, validate=validate.Length(max=MAX_DESCRIPTION))
    location = fields.Nested(LocationSchema, required=True)
    reporter = fields.Nested(ReporterSchema, required=True)
    media_urls = fields.List(
        fields.Url(), load_default=list, validate=validate.Length(max=MAX_MEDIA)
    )
    occurred_at = fields.AwareDateTime(load_default=None, allow_none=True)
    reported_at = fields.AwareDateTime(required=True)


class AssignmentSchema(_Tolerant):
    department = fields.String(required=True, validate=validate.Length(min=1, max=64))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    report_in_due = fields.AwareDateTime(required=True)
    resolve_due = fields.AwareDateTime(required=True)
    report_in = fields.String(load_default="")  # the duration as the catalogue wrote it
    resolve = fields.String(load_default="")


class TierSchema(_Tolerant):
    tier = fields.String(required=True, validate=validate.OneOf(TIERS))
    code = fields.String(required=True)
    name = fields.String(load_default="")
    owner = fields.Nested(OwnerSchema, load_default=dict)


# -- payloads ---------------------------------------------------------------------------------
class CaseReported(_Tolerant):
    report_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    case = fields.Nested(CaseSummarySchema, required=True)


class CaseRouted(_Tolerant):
    case = fields.Nested(CaseSummarySchema, required=True)
    tier = fields.Nested(TierSchema, required=True)
    assignments = fields.List(
        fields.Nested(AssignmentSchema), required=True, validate=validate.Length(min=1)
    )
    catalogue_version = fields.String(load_default="")
    routed_at = fields.AwareDateTime(required=True)


class MissedClockSchema(_Tolerant):
    department = fields.String(required=True, validate=validate.Length(min=1, max=64))
    clock = fields.String(required=True, validate=validate.OneOf(CLOCK_KINDS))
    due_at = fields.AwareDateTime(required=True)


class CaseEscalated(_Tolerant):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))
    missed = fields.List(
        fields.Nested(MissedClockSchema), required=True, validate=validate.Length(min=1)
    )
    from_tier = fields.Nested(TierSchema, required=True)
    to_tier = fields.Nested(TierSchema, required=True)
    notify = fields.List(fields.String(), required=True)  # departments to tell
    escalated_at = fields.AwareDateTime(required=True)


class AssignmentDispatched(_Tolerant):
    department = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    routing_key = fields.String(required=True)
    message_id = fields.String(required=True)
    dispatched_at = fields.AwareDateTime(required=True)


class AssignmentAcknowledged(_Tolerant):
    department = fields.String(required=True)
    actor = fields.String(load_default="")
    note = fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))
    at = fields.AwareDateTime(required=True)


class AssignmentResolved(_Tolerant):
    department = fields.String(required=True)
    actor = fields.String(load_default="")
    note = fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))
    media_urls = fields.List(
        fields.Url(), load_default=list, validate=validate.Length(max=MAX_MEDIA)
    )
    at = fields.AwareDateTime(required=True)


class CaseResolved(_Tolerant):
    resolved_at = fields.AwareDateTime(required=True)


# Public dispatch payloads (exchange gridflow.dispatch, routing key <department>.<type>).
class DispatchAssigned(_Tolerant):
    department = fields.String(required=True)
    assignment = fields.Nested(AssignmentSchema, required=True)
    tier = fields.Nested(TierSchema, required=True)
    case = fields.Nested(CaseSummarySchema, required=True)
    links = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class DispatchEscalated(_Tolerant):
    department = fields.String(required=True)
    escalation = fields.Nested(CaseEscalated, required=True)
    case = fields.Nested(CaseSummarySchema, load_default=None, allow_none=True)
    links = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


@dataclass(frozen=True)
class EventSpec:
    name: str
    version: int
    schema: type[Schema]
    description: str


def _specs(*specs: EventSpec) -> dict[str, EventSpec]:
    return {s.name: s for s in specs}


# Between services, on exchange gridflow.events with routing key = name.
INTERNAL = _specs(
    EventSpec("case.reported", 1, CaseReported, "intake registered a report as a new case"),
    EventSpec(
        "case.routed",
        1,
        CaseRouted,
        "routing chose the starting tier, the lead and assisting departments, deadlines",
    ),
    EventSpec(
        "case.escalated", 1, CaseEscalated, "a deadline was missed; the case moved a tier up"
    ),
    EventSpec(
        "assignment.dispatched",
        1,
        AssignmentDispatched,
        "notify committed an assignment to the department's dispatch queue",
    ),
    EventSpec(
        "assignment.acknowledged",
        1,
        AssignmentAcknowledged,
        "a department reported in (报到) for its assignment",
    ),
    EventSpec(
        "assignment.resolved",
        1,
        AssignmentResolved,
        "a department reported its part of the work done",
    ),
    EventSpec("case.resolved", 1, CaseResolved, "every assignment of the case is resolved"),
)
# To departments, on exchange gridflow.dispatch with routing key <department>.<name>.
PUBLIC = _specs(
    EventSpec("case.assigned", 1, DispatchAssigned, "the department has a new assignment"),
    EventSpec(
        "case.escalated", 1, DispatchEscalated, "a case the department works on moved a tier up"
    ),
)


def spec_for(type_: str, *, public: bool = False) -> EventSpec:
    spec = (PUBLIC if public else INTERNAL).get(type_)
    if spec is None:
        raise InvalidEvent(f"unknown event type {type_!r}")
    return spec


@cache
def _schema(type_: str, public: bool) -> Schema:
    return spec_for(type_, public=public).schema()


@dataclass(frozen=True)
class Event:
    """A validated event. ``data`` holds loaded Python values (datetimes, not strings)."""

    type: str
    case_id: str
    data: dict[str, Any]
    producer: str
    occurred_at: datetime
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: int = 1
    public: bool = False

    def envelope(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "schema_version": self.schema_version,
            "occurred_at": self.occurred_at.isoformat(),
            "producer": self.producer,
            "case_id": self.case_id,
            "data": _schema(self.type, self.public).dump(self.data),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.envelope(), ensure_ascii=False, separators=(",", ":")).encode()


class EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    event_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    type = fields.String(required=True)
    schema_version = fields.Integer(required=True, strict=True)
    occurred_at = fields.AwareDateTime(required=True)
    producer = fields.String(required=True)
    case_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    data = fields.Dict(required=True)


def make_event(
    type_: str,
    case_id: str,
    data: dict[str, Any],
    *,
    producer: str,
    at: datetime,
    event_id: str | None = None,
    public: bool = False,
) -> Event:
    """Build an event, validating ``data`` against its schema. Raises InvalidEvent."""
    spec = spec_for(type_, public=public)
    if at.tzinfo is None:
        raise InvalidEvent(f"{type_}: occurred_at must be timezone-aware")
    if not 0 < len(case_id) <= 64 or (event_id is not None and not 0 < len(event_id) <= 64):
        raise InvalidEvent(f"{type_}: case_id and event_id must be 1–64 characters")
    schema = _schema(type_, public)
    try:
        loaded = schema.load(schema.dump(data))
    except (ValidationError, ValueError, TypeError, AttributeError) as exc:
        detail = exc.messages if isinstance(exc, ValidationError) else exc
        raise InvalidEvent(f"{type_}: {detail}") from exc
    return Event(
        type=type_,
        case_id=case_id,
        data=loaded,
        producer=producer,
        occurred_at=at,
        event_id=event_id or str(uuid.uuid4()),
        schema_version=spec.version,
        public=public,
    )


def decode_event(body: bytes | str, *, public: bool = False) -> Event:
    """Parse and validate a message body. Raises InvalidEvent naming what is wrong."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidEvent("body is not a JSON object")
    try:
        env = EnvelopeSchema().load(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"envelope: {exc.messages}") from exc
    spec = spec_for(env["type"], public=public)
    if env["schema_version"] != spec.version:
        raise InvalidEvent(
            f"{spec.name}: schema_version {env['schema_version']} is not supported "
            f"(this consumer reads version {spec.version})"
        )
    try:
        data = _schema(spec.name, public).load(env["data"])
    except ValidationError as exc:
        raise InvalidEvent(f"{spec.name}: {exc.messages}") from exc
    return Event(
        type=spec.name,
        case_id=env["case_id"],
        data=data,
        producer=env["producer"],
        occurred_at=env["occurred_at"],
        event_id=env["event_id"],
        schema_version=env["schema_version"],
        public=public,
    )
