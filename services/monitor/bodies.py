"""What the monitor's HTTP API accepts: bodies and query strings, validated at the door."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from shared.events import TIERS

from .deadletters import STATES

_CODE = validate.Regexp(r"^[0-9]{1,32}$", error="digits only")
_MAX_IDS = 1000
_MAX_ID = 2**63 - 1  # a database's 64-bit integer: a larger id names no dead letter


class _Query(Schema):
    class Meta:
        unknown = EXCLUDE  # a cache-buster or a UI's extra parameter is not an error


class LoginBody(Schema):
    """A name and password, or an operator's (or admin's) API key."""

    name = fields.String(validate=validate.Length(min=1, max=64))
    password = fields.String(validate=validate.Length(min=1, max=200))
    key = fields.String(validate=validate.Length(min=1, max=200))

    @validates_schema
    def _one_way(self, data: dict[str, Any], **_: Any) -> None:
        if "key" in data:
            if "name" in data or "password" in data:
                raise ValidationError("give a name and password, or a key", "key")
        elif "name" not in data or "password" not in data:
            missing = "name" if "name" not in data else "password"
            raise ValidationError("Missing data for required field.", missing)


class Page(_Query):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))


class LettersQuery(Page):
    state = fields.String(load_default="parked", validate=validate.OneOf((*STATES, "all")))
    queue = fields.String(validate=validate.Length(max=200))


class _Selection(Schema):
    """Either ``ids`` or ``all`` (optionally of one ``queue``)."""

    ids = fields.List(fields.Integer(validate=validate.Range(min=1, max=_MAX_ID)),
                      validate=validate.Length(min=1, max=_MAX_IDS))
    all = fields.Boolean(load_default=False)
    queue = fields.String(validate=validate.Length(max=200))

    @validates_schema
    def _one(self, data: dict[str, Any], **_: Any) -> None:
        if bool(data.get("ids")) == bool(data.get("all")):
            raise ValidationError("give ids (a list of dead letter ids) or all: true", "ids")


class ReplayBody(_Selection):
    pass


class DiscardBody(_Selection):
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500))


class StatsQuery(_Query):
    """The period and the slice of the district that the funnel and the measures cover."""

    since = fields.AwareDateTime()
    until = fields.AwareDateTime()
    grid = fields.String(validate=_CODE)
    department = fields.String(validate=validate.Length(min=1, max=64))


class MeasuresQuery(StatsQuery):
    top = fields.Integer(validate=validate.Range(min=1, max=50))  # how many 高发 categories


class CasesQuery(StatsQuery, Page):
    state = fields.String(validate=validate.Length(min=1, max=20))  # a state, or "open"
    tier = fields.String(validate=validate.OneOf((*TIERS, "unrouted")))


class LedgerQuery(_Query):
    state = fields.String(validate=validate.OneOf(("open", "closed")))
    tier = fields.String(validate=validate.OneOf(TIERS))
    grid = fields.String(validate=_CODE)
    department = fields.String(validate=validate.Length(min=1, max=64))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


def rpc_filters(query: dict[str, Any]) -> dict[str, Any]:
    """A loaded query as RPC keyword arguments (instants as ISO text)."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in query.items()}
