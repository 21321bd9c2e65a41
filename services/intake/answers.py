"""The shapes of intake's main answers, for its OpenAPI document (``shared.openapi``) only.

The views (``views``) build these as dicts; these schemas describe them to integrators and
to the schemathesis run, which checks every answer against them. Unknown keys are allowed
(a view may grow a key without breaking a client); a key that may be null says so.
"""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields

_WHEN = {"format": "date-time"}


class Answer(Schema):
    class Meta:
        unknown = EXCLUDE


def _when(required: bool = True) -> fields.String:
    """An ISO 8601 time with its UTC offset, or null where it may not have happened yet."""
    return fields.String(required=required, allow_none=not required, metadata=_WHEN)


def _text(nullable: bool = False) -> fields.String:
    return fields.String(required=True, allow_none=nullable)


class Links(Answer):
    self = fields.String(required=True)


class ReportAnswer(Answer):
    """A report taken (201: a new case, or a duplicate of an open one) or taken before
    (200: the same ``report_id`` and body again)."""

    case_id = _text()
    created = fields.Boolean(required=True)
    state = _text()
    links = fields.Nested(Links)
    duplicate_of = fields.String()


class BulkItemAnswer(Answer):
    """One report of a bulk request: ``status`` is what ``POST /api/v1/reports`` would have
    answered it (201, 200, or 4xx with ``errors`` naming the fields)."""

    index = fields.Integer(required=True)
    status = fields.Integer(required=True)
    case_id = fields.String()
    created = fields.Boolean()
    state = fields.String()
    links = fields.Nested(Links)
    duplicate_of = fields.String()
    errors = fields.Dict()


class BulkAnswer(Answer):
    results = fields.List(fields.Nested(BulkItemAnswer), required=True)
    created = fields.Integer(required=True)
    existing = fields.Integer(required=True)
    rejected = fields.Integer(required=True)


class Deadlines(Answer):
    report_in = _when(False)
    resolve = _when(False)
    first_report_in = _when(False)


class AssignmentView(Answer):
    """A department on the case: its role, state, the deadlines running now."""

    department = _text()
    role = _text()
    state = _text()
    deadlines = fields.Nested(Deadlines, required=True)
    resolve_missed = fields.Boolean(required=True)
    dispatched_at = _when(False)
    acknowledged_at = _when(False)
    resolved_at = _when(False)
    note = _text()
    media_urls = fields.List(fields.String(), required=True)
    paused = fields.Dict(required=True, allow_none=True)
    reworks = fields.Integer(required=True)
    returned = fields.Dict(required=True, allow_none=True)


class ExtensionView(Answer):
    """A request for more time (延期) and its decision."""

    id = fields.Integer(required=True)
    department = _text()
    extend_by = _text()
    reason = _text()
    state = _text()
    requested_by = _text()
    requested_at = _when()
    decided_at = _when(False)
    decided_by = fields.Dict(required=True, allow_none=True)
    note = _text()


class TaskView(Answer):
    """A grid worker's verification (核查) or follow-up (回访) task."""

    id = fields.Integer(required=True)
    case_id = _text()
    kind = _text()
    state = _text()
    assignee = fields.Dict(required=True)
    created_at = _when()
    due_at = _when(False)
    done_at = _when(False)
    result = fields.Dict(required=True)


class TimelineEntryView(Answer):
    at = _when()
    kind = _text()
    actor = _text()
    reason = _text()
    data = fields.Dict(required=True)


class CaseLocation(Answer):
    grid_code = _text()
    building_code = _text(nullable=True)
    lat = fields.Float(required=True, allow_none=True)
    lng = fields.Float(required=True, allow_none=True)


class CaseSummary(Answer):
    """A case as a list shows it."""

    case_id = _text()
    state = _text()
    tier = _text(nullable=True)
    tier_code = _text(nullable=True)
    category = _text()
    severity = _text()
    grid_code = _text()
    building_code = _text(nullable=True)
    description = _text()
    reported_at = _when()
    updated_at = _when()
    escalations = fields.Integer(required=True)
    departments = fields.List(fields.String(), required=True)
    duplicate_of = _text(nullable=True)
    awaiting_dispatch = _text(nullable=True)


class CaseView(CaseSummary):
    """A case: state, tier, assignments with their deadlines, extensions, tasks, ratings and
    the timeline. Reporters' names and phones are masked for a patrol app's key."""

    location = fields.Nested(CaseLocation, required=True)
    reporter = fields.Dict(required=True)
    media_urls = fields.List(fields.String(), required=True)
    occurred_at = _when(False)
    assignments = fields.List(fields.Nested(AssignmentView), required=True)
    extensions = fields.List(fields.Nested(ExtensionView), required=True)
    tasks = fields.List(fields.Nested(TaskView), required=True)
    followers = fields.List(fields.Dict(), required=True)
    closed_at = _when(False)
    rate_until = _when(False)
    ratings = fields.List(fields.Dict(), required=True)
    timeline = fields.List(fields.Nested(TimelineEntryView), required=True)


class Page(Answer):
    page = fields.Integer(required=True)
    per_page = fields.Integer(required=True)
    total = fields.Integer(required=True)


class CaseList(Page):
    """A page of cases, newest first."""

    items = fields.List(fields.Nested(CaseSummary), required=True)


class TaskList(Page):
    items = fields.List(fields.Nested(TaskView), required=True)


class ExtensionAnswer(Answer):
    """The extension asked for (pending), and the case."""

    extension = fields.Nested(ExtensionView, required=True)
    case = fields.Nested(CaseView, required=True)


class PublicCase(Answer):
    """A case as anyone may see it (Open311 GeoReport v2 fields), without personal data."""

    service_request_id = _text()
    status = fields.String(required=True, metadata={"enum": ["open", "closed"]})
    status_notes = _text()
    service_code = _text()
    service_name = _text()
    description = _text()
    agency_responsible = _text()
    requested_datetime = _when()
    updated_datetime = _when()
    expected_datetime = _when(False)
    address_id = _text()
    lat = fields.Float(required=True, allow_none=True)
    long = fields.Float(required=True, allow_none=True)
    media_url = _text(nullable=True)


class Health(Answer):
    status = _text()
    service = _text()
    open_cases = fields.Integer(required=True)


class KeyListing(Answer):
    """An API key as listed: never its secret."""

    key_id = _text()
    client = _text()
    role = _text()
    grid = _text(nullable=True)
    department = _text(nullable=True)
    rate_per_min = fields.Integer(required=True, allow_none=True)
    note = _text()
    created_at = _when()
    created_by = _text()
    revoked_at = _when(False)
    revoked_by = _text(nullable=True)
    active = fields.Boolean(required=True)


class KeyIssued(Answer):
    """A new key: ``token`` is shown in this answer only."""

    key = fields.Nested(KeyListing, required=True)
    token = _text()


class KeyAnswer(Answer):
    key = fields.Nested(KeyListing, required=True)


class KeyList(Answer):
    keys = fields.List(fields.Nested(KeyListing), required=True)
