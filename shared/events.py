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
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from shared.calendar import Duration
from shared.grid import CANONICAL_LEVELS
from shared.policy import SEVERITIES, TARGETS, WHISTLE_LEVELS

REPORTER_KINDS = ("grid_worker", "resident", "hotline", "app", "department", "other")
ROLES = ("lead", "assist", "summoned")
# Why a department refuses an assignment (退单).
RETURN_REASONS = ("not_our_responsibility", "wrong_location", "duplicate",
                  "needs_other_department", "cannot_handle", "other")
TASK_KINDS = ("verification", "follow_up")
ADDED_REASONS = ("whistle", "assist", "reroute", "manual")
TIERS = tuple(t for t in CANONICAL_LEVELS if t != "building")
CLOCK_KINDS = ("report_in", "resolve")
MAX_DESCRIPTION = 2000
MAX_MEDIA = 10
_CODE = validate.Length(min=1, max=64)
_TEXT = validate.Length(max=MAX_DESCRIPTION)
# What the services' tables hold, so that a valid event is one they can store.
_NODE = validate.Length(min=1, max=32)  # a grid node's code
_ACTOR = validate.Length(max=100)
_ID = validate.Range(min=0, max=2**63 - 1)  # a row's key
_STEP = validate.Range(min=0, max=1000)  # a step of a tier policy


class InvalidEvent(ValueError):
    """A message that is not a valid gridflow event; the text says why."""


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _duration(value: str) -> None:
    try:
        Duration.parse(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


class Instant(fields.AwareDateTime):
    """A timezone-aware date and time between 1970 and 2200 (UTC). Outside, the time is not
    one gridflow deals in, and converting it to UTC or adding a deadline to it may fall off
    the calendar (0001-01-01T00:00+14:00 is in year 0 in UTC: an OverflowError)."""

    default_error_messages = {
        "range": "must lie between 1970-01-01 and 2200-01-01 (UTC)",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        at = super()._deserialize(value, attr, data, **kwargs)
        try:
            utc = at.astimezone(UTC)
        except OverflowError as exc:
            raise self.make_error("range") from exc
        if not EARLIEST <= utc < LATEST:
            raise self.make_error("range")
        return at


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
    # where the reporter's app wants feedback (反馈) pushed; SMS goes to the phone
    webhook_url = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"})


class OwnerSchema(_Tolerant):
    id = fields.String(load_default="")
    name = fields.String(load_default="")
    role = fields.String(load_default="")
    phone = fields.String(load_default="")


class LocationSchema(_Tolerant):
    grid_code = fields.String(required=True, validate=validate.Length(equal=15))
    grid_name = fields.String(load_default="")
    building_code = fields.String(load_default=None, allow_none=True, validate=_NODE)
    path = fields.List(fields.String(), load_default=list)  # names, district first
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-90, 90))
    lng = fields.Float(load_default=None, allow_none=True, validate=validate.Range(-180, 180))


class CaseSummarySchema(_Tolerant):
    """What a department needs to act: carried on case.routed and on dispatch."""

    category = fields.String(required=True, validate=validate.Length(min=1, max=32))
    category_name = fields.String(load_default="")
    severity = fields.String(load_default="normal", validate=validate.OneOf(SEVERITIES))
    description = fields.String(required=True, validate=_TEXT)
    location = fields.Nested(LocationSchema, required=True)
    reporter = fields.Nested(ReporterSchema, required=True)
    media_urls = fields.List(
        fields.Url(), load_default=list, validate=validate.Length(max=MAX_MEDIA)
    )
    occurred_at = Instant(load_default=None, allow_none=True)
    reported_at = Instant(required=True)


class AssignmentSchema(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    report_in_due = Instant(required=True)
    resolve_due = Instant(required=True)
    report_in = fields.String(load_default="")  # the durations as the data wrote them
    resolve = fields.String(load_default="")


class TierSchema(_Tolerant):
    tier = fields.String(required=True, validate=validate.OneOf(TIERS))
    code = fields.String(required=True, validate=_NODE)
    name = fields.String(load_default="")
    owner = fields.Nested(OwnerSchema, load_default=dict)


class TierRecipientSchema(TierSchema):
    role = fields.String(required=True, validate=validate.OneOf(("owner", "supervisor")))


class NotifySchema(_Tolerant):
    """Who is told: departments by code, and grid nodes (their owners) by tier."""

    departments = fields.List(fields.String(validate=_CODE), load_default=list)
    tiers = fields.List(fields.Nested(TierRecipientSchema), load_default=list)


class PolicyStepSchema(_Tolerant):
    tier = fields.String(required=True, validate=validate.OneOf(TIERS))
    notify = fields.List(fields.String(validate=validate.OneOf(TARGETS)), required=True)
    report_in = fields.String(required=True)
    resolve = fields.String(required=True)
    repeat = fields.Integer(required=True, validate=validate.Range(0, 10))


class WhistleTermsSchema(_Tolerant):
    level = fields.String(required=True, validate=validate.OneOf(WHISTLE_LEVELS))
    report_in = fields.String(required=True)
    resolve = fields.String(required=True)
    raise_to = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(TIERS))


class PolicySnapshotSchema(_Tolerant):
    """A case's tier policy as it was when the case was routed (see shared.policy)."""

    name = fields.String(required=True)
    version = fields.String(load_default="")
    severity = fields.String(load_default="normal", validate=validate.OneOf(SEVERITIES))
    start = fields.String(required=True, validate=validate.OneOf(TIERS))
    steps = fields.List(fields.Nested(PolicyStepSchema), required=True,
                        validate=validate.Length(min=1))
    whistle = fields.Dict(keys=fields.String(validate=validate.OneOf(WHISTLE_LEVELS)),
                          values=fields.Nested(WhistleTermsSchema), required=True,
                          validate=validate.Length(equal=len(WHISTLE_LEVELS),
                                                   error="terms for every whistle level"))


class MissedClockSchema(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    clock = fields.String(required=True, validate=validate.OneOf(CLOCK_KINDS))
    due_at = Instant(required=True)
    next_due = Instant(load_default=None, allow_none=True)  # None: it stopped


class OperatorSchema(_Tolerant):
    """Who acted for a grid tier (a whistle, an approval): a name and the tier."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    tier = fields.String(required=True, validate=validate.OneOf(TIERS))
    code = fields.String(load_default="", validate=validate.Length(max=24))


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
    policy = fields.Nested(PolicySnapshotSchema, required=True)
    catalogue_version = fields.String(load_default="", validate=validate.Length(max=32))
    routed_at = Instant(required=True)


class CaseEscalated(_Tolerant):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))
    missed = fields.List(
        fields.Nested(MissedClockSchema), required=True, validate=validate.Length(min=1)
    )
    from_tier = fields.Nested(TierSchema, required=True)
    to_tier = fields.Nested(TierSchema, required=True)
    step = fields.Integer(required=True, validate=_STEP)
    notify = fields.Nested(NotifySchema, required=True)
    escalated_at = Instant(required=True)


class CaseReminded(_Tolerant):
    """Deadlines missed at a tier that repeats them (or that is the top): no tier change."""

    reason = fields.String(required=True, validate=validate.Length(min=1, max=200))
    missed = fields.List(fields.Nested(MissedClockSchema), load_default=list)
    exhausted = fields.List(fields.Nested(MissedClockSchema), load_default=list)
    tier = fields.Nested(TierSchema, required=True)
    step = fields.Integer(required=True, validate=_STEP)
    notify = fields.Nested(NotifySchema, required=True)
    reminded_at = Instant(required=True)


class CaseTierChanged(_Tolerant):
    from_tier = fields.Nested(TierSchema, required=True)
    to_tier = fields.Nested(TierSchema, required=True)
    reason = fields.String(required=True)
    at = Instant(required=True)


class SupervisionItemSchema(_Tolerant):
    id = fields.Integer(required=True, validate=_ID)
    department = fields.String(required=True, validate=_CODE)
    kind = fields.String(required=True, validate=validate.OneOf(CLOCK_KINDS))
    due_at = Instant(required=True)
    tier = fields.Nested(TierSchema, load_default=None, allow_none=True)
    at = Instant(required=True)  # opened or closed
    reason = fields.String(load_default="")
    late_by_s = fields.Float(load_default=None, allow_none=True)


class SupervisionChanged(_Tolerant):
    items = fields.List(fields.Nested(SupervisionItemSchema), required=True,
                        validate=validate.Length(min=1))


class CaseWhistled(_Tolerant):
    level = fields.String(required=True, validate=validate.OneOf(WHISTLE_LEVELS))
    departments = fields.List(fields.String(validate=_CODE), required=True,
                              validate=validate.Length(min=1, max=20))
    by = fields.Nested(OperatorSchema, required=True)
    reason = fields.String(load_default="", validate=_TEXT)
    whistled_at = Instant(required=True)


class AssignmentsAdded(_Tolerant):
    """Departments added to a case after its routing.

    ``reason`` says why: ``whistle`` (吹哨 summons them: ``level``, ``by`` and ``whistler``
    are given; ``raise_to`` is where a hard case goes), ``assist`` (协同: the lead or the tier
    owner asked for help), ``reroute`` (a department returned its assignment and the next
    candidate takes it: ``replaces``), ``manual`` (an operator dispatched by hand).
    ``assignments`` are the new ones; ``already`` named departments that were on the case
    already (they are told, and keep their clocks)."""

    reason = fields.String(required=True, validate=validate.OneOf(ADDED_REASONS))
    level = fields.String(load_default=None, allow_none=True,
                          validate=validate.OneOf(WHISTLE_LEVELS))
    by = fields.Nested(OperatorSchema, load_default=None, allow_none=True)
    requested_by = fields.String(load_default="", validate=validate.Length(max=100))
    note = fields.String(load_default="", validate=_TEXT)
    assignments = fields.List(fields.Nested(AssignmentSchema), required=True)
    already = fields.List(fields.String(validate=_CODE), load_default=list)
    replaces = fields.String(load_default=None, allow_none=True, validate=_CODE)
    whistler = fields.Nested(TierSchema, load_default=None, allow_none=True)
    raise_to = fields.Nested(TierSchema, load_default=None, allow_none=True)
    case = fields.Nested(CaseSummarySchema, required=True)
    added_at = Instant(required=True)

    @validates_schema
    def _someone(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("assignments") and not data.get("already"):
            raise ValidationError("at least one department is added or named")
        if data.get("reason") == "whistle":
            missing = [k for k in ("level", "by", "whistler") if not data.get(k)]
            if missing:
                raise ValidationError(f"a whistle gives {', '.join(missing)}")


class AssignmentRequested(_Tolerant):
    """协同 or manual dispatch: a department is asked onto the case (routing plans it)."""

    department = fields.String(required=True, validate=_CODE)
    role = fields.String(required=True, validate=validate.OneOf(("lead", "assist")))
    kind = fields.String(required=True, validate=validate.OneOf(("assist", "manual")))
    requested_by = fields.String(required=True, validate=validate.Length(min=1, max=100))
    note = fields.String(load_default="", validate=_TEXT)
    at = Instant(required=True)


class AssignmentReturned(_Tolerant):
    """退单: a department refused its assignment, with a reason code."""

    department = fields.String(required=True, validate=_CODE)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    reason_code = fields.String(required=True, validate=validate.OneOf(RETURN_REASONS))
    note = fields.String(load_default="", validate=_TEXT)
    actor = fields.String(load_default="", validate=_ACTOR)
    at = Instant(required=True)


class CaseNeedsDispatch(_Tolerant):
    """No candidate is left for a returned assignment: the tier owner dispatches by hand."""

    returned = fields.Nested(AssignmentReturned, required=True)
    tier = fields.Nested(TierSchema, required=True)
    reason = fields.String(required=True, validate=_TEXT)
    case = fields.Nested(CaseSummarySchema, required=True)
    at = Instant(required=True)


class AssignmentProgressed(_Tolerant):
    """进展: a department reports how the work goes."""

    department = fields.String(required=True, validate=_CODE)
    note = fields.String(required=True, validate=validate.Length(min=1, max=MAX_DESCRIPTION))
    media_urls = fields.List(fields.Url(), load_default=list,
                             validate=validate.Length(max=MAX_MEDIA))
    actor = fields.String(load_default="", validate=_ACTOR)
    at = Instant(required=True)


class TaskSchema(_Tolerant):
    id = fields.Integer(required=True, validate=_ID)
    kind = fields.String(required=True, validate=validate.OneOf(TASK_KINDS))
    assignee = fields.Nested(TierSchema, required=True)  # the cell and its grid worker
    due_at = Instant(load_default=None, allow_none=True)
    note = fields.String(load_default="", validate=_TEXT)


class TaskCreated(_Tolerant):
    """A grid worker has a task on the case: verify on site (核查), or call back (回访)."""

    task = fields.Nested(TaskSchema, required=True)
    case = fields.Nested(CaseSummarySchema, required=True)
    at = Instant(required=True)


class CaseVerified(_Tolerant):
    """核查: the grid worker checked the work on site."""

    passed = fields.Boolean(required=True)
    by = fields.Nested(OperatorSchema, required=True)
    note = fields.String(load_default="", validate=_TEXT)
    media_urls = fields.List(fields.Url(), load_default=list,
                             validate=validate.Length(max=MAX_MEDIA))
    rework = fields.List(fields.String(validate=_CODE), load_default=list)
    at = Instant(required=True)


class CaseClosed(_Tolerant):
    """结案: verified on site; the reporter may rate it, a follow-up visit is due later."""

    closed_at = Instant(required=True)
    rate_until = Instant(required=True)
    follow_up_at = Instant(required=True)
    grid_code = fields.String(required=True, validate=validate.Length(equal=15))


class CaseReopened(_Tolerant):
    """返工 of a closed or resolved case: why, and which departments work again."""

    cause = fields.String(required=True,
                          validate=validate.OneOf(("verification", "rating", "operator")))
    reason = fields.String(required=True, validate=_TEXT)
    departments = fields.List(fields.String(validate=_CODE), required=True,
                              validate=validate.Length(min=1))
    at = Instant(required=True)


class CaseRated(_Tolerant):
    """评议打分: the reporter's satisfaction."""

    score = fields.Integer(required=True, validate=validate.Range(1, 5))
    fixed = fields.Boolean(load_default=None, allow_none=True)
    comment = fields.String(load_default="", validate=_TEXT)
    reopens = fields.Boolean(required=True)
    at = Instant(required=True)


class FollowUpDue(_Tolerant):
    """escalation's follow-up clock for a closed case fell due (回访)."""

    due_at = Instant(required=True)
    grid_code = fields.String(required=True, validate=validate.Length(equal=15))


class ReporterAttached(_Tolerant):
    """A duplicate report's reporter now follows this case and gets its feedback."""

    reporter = fields.Nested(ReporterSchema, required=True)
    report_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    duplicate_case_id = fields.String(required=True, validate=_CODE)
    at = Instant(required=True)


class ReporterDetached(_Tolerant):
    """An operator un-linked a duplicate: its reporter follows its own case again."""

    reporter = fields.Nested(ReporterSchema, required=True)
    duplicate_case_id = fields.String(required=True, validate=_CODE)
    at = Instant(required=True)


class AssignmentDispatched(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    routing_key = fields.String(required=True, validate=validate.Length(min=1, max=255))
    message_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    dispatched_at = Instant(required=True)


class AssignmentAcknowledged(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    actor = fields.String(load_default="", validate=_ACTOR)
    note = fields.String(load_default="", validate=_TEXT)
    at = Instant(required=True)


class AssignmentResolved(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    actor = fields.String(load_default="", validate=_ACTOR)
    note = fields.String(load_default="", validate=_TEXT)
    media_urls = fields.List(
        fields.Url(), load_default=list, validate=validate.Length(max=MAX_MEDIA)
    )
    at = Instant(required=True)


class AssignmentPaused(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=MAX_DESCRIPTION))
    actor = fields.String(load_default="", validate=_ACTOR)
    at = Instant(required=True)


class AssignmentResumed(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    actor = fields.String(load_default="", validate=_ACTOR)
    at = Instant(required=True)


class AssignmentReopened(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    reason = fields.String(required=True, validate=_TEXT)
    at = Instant(required=True)


class ExtensionDecided(_Tolerant):
    extension_id = fields.Integer(required=True, validate=_ID)
    department = fields.String(required=True, validate=_CODE)
    approved = fields.Boolean(required=True)
    extend_by = fields.String(required=True, validate=[  # a duration: 4wh, 2wd, 1d …
        validate.Length(min=1, max=16), _duration])
    approver = fields.Nested(OperatorSchema, required=True)
    note = fields.String(load_default="", validate=_TEXT)
    at = Instant(required=True)


class AssignmentRescheduled(_Tolerant):
    """escalation moved an assignment's deadlines (an extension, a resume, a rework).
    A deadline is None while its clock is paused or stopped."""

    department = fields.String(required=True, validate=_CODE)
    report_in_due = Instant(load_default=None, allow_none=True)
    resolve_due = Instant(load_default=None, allow_none=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=MAX_DESCRIPTION))
    at = Instant(required=True)


class CaseResolved(_Tolerant):
    resolved_at = Instant(required=True)


# Public dispatch payloads (exchange gridflow.dispatch). Departments get routing key
# <department>.<type>; grid tiers get tier.<tier>.<node code>.<type>.
class RecipientSchema(_Tolerant):
    kind = fields.String(required=True, validate=validate.OneOf(("department", "tier")))
    department = fields.String(load_default=None, allow_none=True, validate=_CODE)
    tier = fields.Nested(TierRecipientSchema, load_default=None, allow_none=True)

    @validates_schema
    def _addressed(self, data: dict[str, Any], **_: Any) -> None:
        kind = data.get("kind")
        if kind in ("department", "tier") and not data.get(kind):
            raise ValidationError(f"a {kind} recipient names its {kind}", kind)


class WhistleInfoSchema(_Tolerant):
    level = fields.String(required=True, validate=validate.OneOf(WHISTLE_LEVELS))
    by = fields.Nested(OperatorSchema, required=True)
    note = fields.String(load_default="")


class DispatchAssigned(_Tolerant):
    department = fields.String(required=True, validate=_CODE)
    assignment = fields.Nested(AssignmentSchema, required=True)
    tier = fields.Nested(TierSchema, required=True)
    case = fields.Nested(CaseSummarySchema, required=True)
    whistle = fields.Nested(WhistleInfoSchema, load_default=None, allow_none=True)
    links = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class _Notice(_Tolerant):
    """A public message for a department or a grid node, about a case."""

    # for a department
    department = fields.String(load_default=None, allow_none=True, validate=_CODE)
    recipient = fields.Nested(RecipientSchema, required=True)
    case = fields.Nested(CaseSummarySchema, load_default=None, allow_none=True)
    links = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)


class DispatchEscalated(_Notice):
    escalation = fields.Nested(CaseEscalated, required=True)


class DispatchReminded(_Notice):
    reminder = fields.Nested(CaseReminded, required=True)


class DispatchWhistled(_Notice):
    whistle = fields.Nested(WhistleInfoSchema, required=True)
    departments = fields.List(fields.String(), required=True)


class DispatchProgress(_Notice):
    """进展 of another department on a case the recipient leads."""

    progress = fields.Nested(AssignmentProgressed, required=True)


class DispatchReworked(_Notice):
    """返工: the recipient's resolved assignment is to be worked again."""

    rework = fields.Nested(AssignmentReopened, required=True)


class DispatchTask(_Notice):
    """A grid worker's task: verify on site (核查) or call the reporter back (回访)."""

    task = fields.Nested(TaskSchema, required=True)


class DispatchNeedsDispatch(_Notice):
    """A returned assignment found no candidate: the tier owner dispatches by hand."""

    returned = fields.Nested(AssignmentReturned, required=True)
    reason = fields.String(required=True)


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
    EventSpec("case.routed", 1, CaseRouted,
              "routing chose the starting tier, the departments, deadlines and the policy"),
    EventSpec("case.whistled", 1, CaseWhistled,
              "a community or street operator blew the whistle (吹哨) on a case"),
    EventSpec("assignments.added", 1, AssignmentsAdded,
              "routing added departments to a case (those a whistle summoned)"),
    EventSpec("assignment.dispatched", 1, AssignmentDispatched,
              "notify committed an assignment to the department's dispatch queue"),
    EventSpec("assignment.acknowledged", 1, AssignmentAcknowledged,
              "a department reported in (报到) for its assignment"),
    EventSpec("assignment.resolved", 1, AssignmentResolved,
              "a department reported its part of the work done"),
    EventSpec("assignment.paused", 1, AssignmentPaused,
              "a department paused its work (缓办): its clocks stop counting"),
    EventSpec("assignment.resumed", 1, AssignmentResumed,
              "a paused assignment goes on: its clocks count again"),
    EventSpec("assignment.reopened", 1, AssignmentReopened,
              "an assignment is worked again (返工): its clocks restart the policy"),
    EventSpec("extension.decided", 1, ExtensionDecided,
              "the tier above approved or refused a department's extension (延期)"),
    EventSpec("case.escalated", 1, CaseEscalated,
              "a deadline was missed; the case moved a tier up"),
    EventSpec("case.reminded", 1, CaseReminded,
              "a deadline was missed at a tier that repeats it; the people were reminded"),
    EventSpec("assignment.rescheduled", 1, AssignmentRescheduled,
              "escalation moved an assignment's deadlines (extension, resume, rework)"),
    EventSpec("case.tier_changed", 1, CaseTierChanged,
              "the case's tier changed other than by escalation (a whistle, a restart)"),
    EventSpec("supervision.opened", 1, SupervisionChanged,
              "overdue items went on the supervision ledger (督办台账)"),
    EventSpec("supervision.closed", 1, SupervisionChanged,
              "supervised items were closed (reported in, resolved, extended)"),
    EventSpec("case.resolved", 1, CaseResolved, "every assignment of the case is resolved"),
    EventSpec("assignment.requested", 1, AssignmentRequested,
              "a department is asked onto the case: 协同 by the lead or tier, or by hand"),
    EventSpec("assignment.returned", 1, AssignmentReturned,
              "a department refused its assignment (退单) with a reason code"),
    EventSpec("case.needs_dispatch", 1, CaseNeedsDispatch,
              "no candidate is left for a returned assignment: dispatch by hand"),
    EventSpec("assignment.progressed", 1, AssignmentProgressed,
              "a department reported progress (进展) with a note and media"),
    EventSpec("task.created", 1, TaskCreated,
              "a grid worker has a verification (核查) or follow-up (回访) task"),
    EventSpec("case.verified", 1, CaseVerified, "the grid worker checked the work on site"),
    EventSpec("case.closed", 1, CaseClosed, "the case passed verification and is closed"),
    EventSpec("case.reopened", 1, CaseReopened,
              "a resolved or closed case is worked again (返工)"),
    EventSpec("case.rated", 1, CaseRated, "the reporter rated the result (评议)"),
    EventSpec("followup.due", 1, FollowUpDue, "a closed case's follow-up visit is due (回访)"),
    EventSpec("reporter.attached", 1, ReporterAttached,
              "a duplicate report's reporter follows this case"),
    EventSpec("reporter.detached", 1, ReporterDetached,
              "an un-linked duplicate's reporter no longer follows this case"),
)
# To departments and grid tiers, on exchange gridflow.dispatch.
PUBLIC = _specs(
    EventSpec("case.assigned", 1, DispatchAssigned, "the department has a new assignment"),
    EventSpec("case.escalated", 1, DispatchEscalated,
              "a case the recipient works on or supervises moved a tier up"),
    EventSpec("case.reminded", 1, DispatchReminded,
              "a deadline the recipient answers for was missed and repeated"),
    EventSpec("case.progress", 1, DispatchProgress,
              "another department reported progress on a case the recipient leads"),
    EventSpec("case.reworked", 1, DispatchReworked,
              "the department's resolved assignment is to be worked again (返工)"),
    EventSpec("task.assigned", 1, DispatchTask,
              "a grid worker's verification or follow-up task"),
    EventSpec("case.needs_dispatch", 1, DispatchNeedsDispatch,
              "a returned assignment found no candidate; the tier owner dispatches by hand"),
    EventSpec("case.whistled", 1, DispatchWhistled,
              "a whistle summoned departments on a case under the recipient's tier"),
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
    occurred_at = Instant(required=True)
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


UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_TEXT = "text must not hold a NUL character or an unpaired surrogate"


def unstorable(value: Any) -> str | None:
    """Where a decoded JSON value holds text that no database keeps and no encoder writes
    (a NUL character, an unpaired surrogate: JSON's ``\\u0000``, ``\\ud800``), as the
    field's dotted path ("" for the top); None when it holds none."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if UNSTORABLE.search(v):
                return path
        elif isinstance(v, dict):
            for k, x in v.items():
                here = f"{path}.{k}" if path else str(k)
                if UNSTORABLE.search(k):
                    return here
                stack.append((here, x))
        elif isinstance(v, list):
            stack.extend((f"{path}.{i}" if path else str(i), x) for i, x in enumerate(v))
    return None


def json_object(body: bytes | str) -> dict[str, Any]:
    """A message body as a JSON object, or InvalidEvent saying why it is not one."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from exc
    except RecursionError as exc:  # the decoder recurses once per level of nesting
        raise InvalidEvent("body is not JSON: nested too deeply") from exc
    if not isinstance(raw, dict):
        raise InvalidEvent("body is not a JSON object")
    where = unstorable(raw)
    if where is not None:
        raise InvalidEvent(f"{where or 'body'}: {UNSTORABLE_TEXT}")
    return raw


_ENVELOPE = EnvelopeSchema()  # a schema instance is reusable; building one costs ~60 µs


def decode_event(body: bytes | str, *, public: bool = False) -> Event:
    """Parse and validate a message body. Raises InvalidEvent naming what is wrong."""
    raw = json_object(body)
    try:
        env = _ENVELOPE.load(raw)
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


# -- OPERATIONAL: not events of the catalogues above ------------------------------------------
# What service processes tell the operators' monitor about themselves. Not a domain event: no
# envelope, no case, not in INTERNAL or PUBLIC, not kept; on its own exchange
# (``gridflow.heartbeats``, routing key ``<service>.<instance>``), transient.
HEARTBEAT_TYPE = "service.heartbeat"  # the AMQP ``type`` property of every heartbeat
HEARTBEAT_STATES = ("up", "stopping")


class HeartbeatSchema(_Tolerant):
    """One heartbeat: which process (``instance`` is unique per started service process,
    ``<host>:<pid>:<short uuid>``), what it runs, since when, and how often it beats. An
    instance is down when it said ``stopping`` or missed 3 intervals."""

    service = fields.String(required=True, validate=validate.Length(min=1, max=64))
    instance = fields.String(required=True, validate=validate.Length(min=1, max=200))
    host = fields.String(required=True, validate=validate.Length(min=1, max=255))
    pid = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=2**32))
    version = fields.String(required=True, validate=validate.Length(min=1, max=64))
    started_at = Instant(required=True)
    sent_at = Instant(required=True)
    interval_s = fields.Float(
        required=True, allow_nan=False,
        validate=validate.Range(min=0, max=3600, min_inclusive=False),
    )
    state = fields.String(required=True, validate=validate.OneOf(HEARTBEAT_STATES))


_HEARTBEAT = HeartbeatSchema()


def _field_errors(messages: Any) -> str:
    """``field: message`` for each field marshmallow named, sorted; nested ones dotted."""
    if not isinstance(messages, dict):
        return str(messages)
    parts = []
    for name, value in sorted(messages.items(), key=lambda kv: str(kv[0])):
        if isinstance(value, dict):
            parts.append(f"{name}.{_field_errors(value)}")
        else:
            text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{name}: {text.rstrip('.')}")
    return "; ".join(parts)


def heartbeat_body(**fields_: Any) -> bytes:
    """A heartbeat's JSON body, checked against HeartbeatSchema. Raises InvalidEvent."""
    try:
        data = _HEARTBEAT.load(_HEARTBEAT.dump(fields_))
    except ValidationError as exc:
        raise InvalidEvent(f"heartbeat: {_field_errors(exc.messages)}") from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidEvent(f"heartbeat: {exc}") from exc
    return json.dumps(_HEARTBEAT.dump(data), ensure_ascii=False, separators=(",", ":")).encode()


def decode_heartbeat(body: bytes | str) -> dict[str, Any]:
    """A heartbeat's fields (datetimes loaded, aware), or InvalidEvent naming the bad field."""
    raw = json_object(body)
    try:
        return _HEARTBEAT.load(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"heartbeat: {_field_errors(exc.messages)}") from exc
