"""The report a patrol app posts: its schema, and its resolution into a case summary.

Validation happens here, at the boundary, before anything is stored: marshmallow checks
the shape (types, lengths, formats); ``summarise`` checks the body against the
deployment's data (a known category, a known cell, a point inside a cell).
Errors name the field: ``{"category": ["unknown category 'X'…"]}``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from shared.events import MAX_DESCRIPTION, MAX_MEDIA, REPORTER_KINDS, Instant
from shared.grid import GridError
from shared.policy import SEVERITIES
from shared.reference import ReferenceData
from shared.responses import NOT_BLANK

FUTURE_SKEW = timedelta(minutes=5)
MAX_BULK = 200  # reports in one bulk request (a shift's worth for a patrol app offline)


class ReporterBody(Schema):
    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, validate=validate.OneOf(REPORTER_KINDS))
    id = fields.String(load_default="", validate=validate.Length(max=64))
    name = fields.String(load_default="", validate=validate.Length(max=64))
    phone = fields.String(
        load_default="",
        validate=validate.Regexp(r"^(\+?[0-9][0-9 -]{4,30})?\Z", error="not a phone number"),
    )
    webhook_url = fields.Url(schemes={"http", "https"}, load_default=None, allow_none=True,
                             validate=validate.Length(max=500))  # where feedback goes


class ReportBody(Schema):
    """A report of an issue. Its place is ``grid_code`` (a cell or a building) or ``lat`` and
    ``lng`` together; ``category`` is a minor category of ``GET /api/v1/categories``. A
    ``report_id`` sent again with the same body is the same report."""

    class Meta:
        unknown = RAISE

    report_id = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z",
            error="1–64 characters: letters, digits, and . _ : - (not first)",
        ),
    )
    category = fields.String(required=True, validate=validate.Length(min=1, max=32))
    grid_code = fields.String(validate=validate.Regexp(r"^[0-9]{6,24}\Z", error="digits only"))
    lat = fields.Float(validate=validate.Range(-90, 90), allow_nan=False)
    lng = fields.Float(validate=validate.Range(-180, 180), allow_nan=False)
    description = fields.String(
        required=True, validate=[validate.Length(min=1, max=MAX_DESCRIPTION), NOT_BLANK]
    )
    reporter = fields.Nested(ReporterBody, required=True)
    media_urls = fields.List(
        fields.Url(schemes={"http", "https"}),
        load_default=list,
        validate=validate.Length(max=MAX_MEDIA),
    )
    occurred_at = Instant(load_default=None, allow_none=True)
    severity = fields.String(load_default="normal", validate=validate.OneOf(SEVERITIES))

    @validates_schema
    def _location(self, data: dict[str, Any], **_: Any) -> None:
        has_lat, has_lng = "lat" in data, "lng" in data
        if has_lat != has_lng:
            missing = "lng" if has_lat else "lat"
            raise ValidationError({missing: ["give lat and lng together"]})
        if "grid_code" not in data and not has_lat:
            raise ValidationError({"grid_code": ["give grid_code, or lat and lng"]})


def body_fingerprint(raw: Any) -> str:
    """A stable hash of the posted JSON, to tell a retry from a different report."""
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class BulkBody(Schema):
    """Many reports in one request, for a patrol app that syncs after being offline. Each
    item is a report as ``POST /api/v1/reports`` takes it and is judged on its own: the
    valid ones are stored (in one transaction), each invalid one is answered with its
    errors, and a ``report_id`` sent before answers its case again."""

    class Meta:
        unknown = RAISE

    reports = fields.List(
        fields.Raw(metadata={"description": "a report, as POST /api/v1/reports takes it"}),
        required=True,
        validate=validate.Length(min=1, max=MAX_BULK),
    )


class TakenReport(NamedTuple):
    """A report that passed validation: its body, its case summary, its body's hash."""

    body: dict[str, Any]
    summary: dict[str, Any]
    fingerprint: str


def bulk_item(raw: Any) -> dict[str, Any]:
    """One item of a bulk request as a valid report body, or ValidationError."""
    if not isinstance(raw, dict):
        raise ValidationError({"_item": ["expected a JSON object: a report"]})
    return ReportBody().load(raw)


def summarise(body: dict[str, Any], ref: ReferenceData, now: datetime) -> dict[str, Any]:
    """The case summary for a valid body, or ValidationError naming the field at fault."""
    errors: dict[str, list[str]] = {}
    category = ref.catalogue.get(body["category"])
    if category is None:
        errors["category"] = [
            f"unknown category {body['category']!r}; GET /api/v1/categories lists them"
        ]
    if body.get("occurred_at") and body["occurred_at"] > now + FUTURE_SKEW:
        errors["occurred_at"] = ["lies in the future"]

    cell = building = None
    if "grid_code" in body:
        try:
            cell, building = ref.grid.cell_for_code(body["grid_code"])
        except GridError as exc:
            errors["grid_code"] = [str(exc)]
    else:
        cell = ref.grid.locate(body["lat"], body["lng"])
        if cell is None:
            msg = f"point ({body['lat']}, {body['lng']}) lies outside every grid cell"
            errors["lat"] = errors["lng"] = [msg]
    if errors:
        raise ValidationError(errors)
    assert category is not None and cell is not None
    place = building or cell
    return {
        "category": category.code,
        "category_name": category.name,
        "severity": body.get("severity", "normal"),
        "description": body["description"].strip(),
        "location": {
            "grid_code": cell.code,
            "grid_name": cell.name,
            "building_code": building.code if building else None,
            "path": [n.name for n in place.path()],
            "lat": body.get("lat"),
            "lng": body.get("lng"),
        },
        "reporter": body["reporter"],
        "media_urls": body["media_urls"],
        "occurred_at": body.get("occurred_at"),
        "reported_at": now,
    }


def summary_of(case: Any, ref: ReferenceData) -> dict[str, Any]:
    """The case summary events carry, rebuilt from a stored case (an un-linked duplicate
    is reported again; a task tells the grid worker what the case is)."""
    cell, building = ref.grid.cell_for_code(case.building_code or case.grid_code)
    category = ref.catalogue.get(case.category)
    return {
        "category": case.category,
        "category_name": category.name if category else "",
        "severity": case.severity,
        "description": case.description,
        "location": {
            "grid_code": cell.code,
            "grid_name": cell.name,
            "building_code": building.code if building else None,
            "path": [n.name for n in (building or cell).path()],
            "lat": case.lat,
            "lng": case.lng,
        },
        "reporter": case.reporter,
        "media_urls": case.media_urls,
        "occurred_at": case.occurred_at,
        "reported_at": case.reported_at,
    }
