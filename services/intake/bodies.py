"""The request bodies and query strings of intake's HTTP API (reports aside: ``reports``).

Every body is validated here, at the boundary: unknown fields are refused, and an error
names the field and the reason.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates, validates_schema

from shared import access
from shared.calendar import Duration
from shared.events import MAX_DESCRIPTION, MAX_MEDIA, TIERS
from shared.policy import WHISTLE_LEVELS
from shared.responses import NOT_BLANK, AckBody, Body, ProgressBody, ResolveBody, ReturnBody

from .cases import CaseState
from .views import MAX_PER_PAGE

# the department actions' bodies are shared with the AMQP door (shared.responses)
__all__ = ["AckBody", "ProgressBody", "ResolveBody", "ReturnBody"]

_ACTOR = fields.String(load_default="", validate=validate.Length(max=100))
_CODES = r"^[0-9]{1,24}\Z"
MAX_EXTENSION_DAYS = 30


def _reason(required: bool = True) -> fields.String:
    if required:
        return fields.String(
            required=True, validate=[validate.Length(min=1, max=MAX_DESCRIPTION), NOT_BLANK]
        )
    return fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))


class OperatorBody(Body):
    """Who acts for a grid tier: their name, the tier, and the code of their node."""

    name = fields.String(required=True, validate=[validate.Length(min=1, max=64), NOT_BLANK])
    tier = fields.String(required=True, validate=validate.OneOf(TIERS))
    code = fields.String(required=True, validate=validate.Regexp(_CODES, error="digits only"))


class PauseBody(Body):
    actor = _ACTOR
    reason = _reason()


class ResumeBody(Body):
    actor = _ACTOR


class ExtensionBody(Body):
    actor = _ACTOR
    extend_by = fields.String(required=True)
    reason = _reason()

    @validates("extend_by")
    def _duration(self, value: str, **_: Any) -> None:
        try:
            d = Duration.parse(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        if d.amount < 1:
            raise ValidationError("must be at least one unit")
        days = {"minutes": 1 / 1440, "hours": 1 / 24, "days": 1, "working_hours": 1 / 7,
                "working_days": 1}[d.unit] * d.amount
        if days > MAX_EXTENSION_DAYS:
            raise ValidationError(f"at most {MAX_EXTENSION_DAYS} days")

    @post_load
    def _canonical(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """As the duration's short form ("2d", not " 0002 d "): what is stored and shown."""
        data["extend_by"] = str(Duration.parse(data["extend_by"]))
        return data


class DecisionBody(Body):
    approved = fields.Boolean(required=True, truthy={True}, falsy={False})
    by = fields.Nested(OperatorBody, required=True)
    note = _reason(required=False)


class WhistleBody(Body):
    level = fields.String(required=True, validate=validate.OneOf(WHISTLE_LEVELS))
    departments = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        required=True,
        validate=validate.Length(min=1, max=20),
    )
    by = fields.Nested(OperatorBody, required=True)
    reason = _reason(required=False)


class ReopenBody(Body):
    by = fields.Nested(OperatorBody, required=True)
    reason = _reason()


class CaseListQuery(Body):
    state = fields.String(validate=validate.OneOf(CaseState.ALL))
    grid = fields.String(validate=validate.Regexp(_CODES, error="digits only"))
    department = fields.String(validate=validate.Length(max=64))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PER_PAGE))


class GridQuery(Body):
    code = fields.String(validate=validate.Regexp(_CODES, error="digits only"))
    depth = fields.Integer(validate=validate.Range(min=0, max=10))


class SupervisionQuery(Body):
    state = fields.String(validate=validate.OneOf(("open", "closed")))
    tier = fields.String(validate=validate.OneOf(TIERS))
    grid = fields.String(validate=validate.Regexp(_CODES, error="digits only"))
    department = fields.String(validate=validate.Length(max=64))
    case_id = fields.String(validate=validate.Length(max=64))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PER_PAGE))
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv")))


class RequestDepartmentBody(Body):
    """协同 (the lead asks, ``by_department``) or a dispatch by hand (an operator, ``by``)."""

    department = fields.String(required=True, validate=validate.Length(min=1, max=64))
    role = fields.String(load_default="assist", validate=validate.OneOf(("assist", "lead")))
    by_department = fields.String(validate=validate.Length(min=1, max=64))
    by = fields.Nested(OperatorBody)
    note = _reason(required=False)

    @validates_schema
    def _one_asker(self, data: dict[str, Any], **_: Any) -> None:
        if ("by" in data) == ("by_department" in data):
            raise ValidationError("give by (an operator) or by_department (the lead)", "by")


class VerificationBody(Body):
    passed = fields.Boolean(required=True, truthy={True}, falsy={False})
    by = fields.Nested(OperatorBody, required=True)
    note = _reason(required=False)
    media_urls = fields.List(fields.Url(schemes={"http", "https"}), required=True,
                             validate=validate.Length(min=1, max=MAX_MEDIA,
                                                      error="one to 10 photos"))
    rework = fields.List(fields.String(validate=validate.Length(min=1, max=64)),
                         load_default=list, validate=validate.Length(max=20))


class RatingBody(Body):
    score = fields.Integer(required=True, strict=True, validate=validate.Range(1, 5))
    fixed = fields.Boolean(load_default=None, allow_none=True, truthy={True}, falsy={False})
    comment = _reason(required=False)
    reporter_id = fields.String(load_default="", validate=validate.Length(max=64))


class UnlinkBody(Body):
    by = fields.Nested(OperatorBody, required=True)
    reason = _reason()


class TaskDoneBody(Body):
    by = fields.Nested(OperatorBody, required=True)
    note = _reason(required=False)


class TaskQuery(Body):
    assignee = fields.String(validate=validate.Regexp(_CODES, error="digits only"))
    state = fields.String(validate=validate.OneOf(("open", "done")))
    kind = fields.String(validate=validate.OneOf(("verification", "follow_up")))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_PER_PAGE))


# -- keys and the audit log (admin) -------------------------------------------------------
class IssueKeyBody(Body):
    client = fields.String(required=True, validate=[validate.Length(min=1, max=100), NOT_BLANK])
    role = fields.String(required=True, validate=validate.OneOf(access.ROLES))
    grid = fields.String(load_default=None, allow_none=True,
                         validate=validate.Regexp(_CODES, error="digits only"))
    department = fields.String(load_default=None, allow_none=True,
                               validate=validate.Length(min=1, max=64))
    rate_per_min = fields.Integer(load_default=None, allow_none=True, strict=True,
                                  validate=validate.Range(min=0, max=1_000_000))
    note = fields.String(load_default="", validate=validate.Length(max=500))

    @validates_schema
    def _scope(self, data: dict[str, Any], **_: Any) -> None:
        problem = access.check_scope_fields(data["role"], data.get("grid"),
                                            data.get("department"))
        if problem:
            raise ValidationError(problem, "grid" if "grid" in problem else
                                  "department" if "department" in problem else "role")


class KeyListQuery(Body):
    revoked = fields.Boolean(load_default=False)


class AuditQuery(Body):
    key_id = fields.String(validate=validate.Length(max=16))
    actor = fields.String(validate=validate.Length(max=120))
    action = fields.String(validate=validate.Length(max=64))
    target = fields.String(validate=validate.Length(max=64))
    outcome = fields.String(validate=validate.OneOf(("done", "denied")))
    since = fields.AwareDateTime()
    until = fields.AwareDateTime()
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
