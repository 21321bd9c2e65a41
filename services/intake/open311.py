"""Open311 GeoReport v2 (https://wiki.open311.org/GeoReport_v2) over gridflow's catalogue,
grid and cases: what a 311 client sends and what it is answered, in JSON and XML.

Pure Python (no nameko, no SQL): the entrypoints are in ``open311_api``. Here:

- the documents — a *service* per minor category, its *service definition* (typed
  attributes), a *request* (a case as anyone may see it), *errors* — and their rendering in
  both formats (``render``): JSON as the spec shows it, XML by the same names (the Spark
  convention: a list is an element of the plural name holding one element per item);
- the input — ``PostForm`` and ``RequestsQuery`` (marshmallow, at the boundary), the
  ``attribute[code]`` fields checked against the service definition, ``address_string``
  resolved to a compound or building of the grid — and its mapping to the report a
  patrol app would post (``reports.ReportBody``), errors named by their Open311 fields;
- the token: a report's idempotency key, derived from the API key, the form and the day,
  so that a client retrying its POST gets the same service request and never a second one.

Errors are ``Open311Error``: an HTTP status (400, 403, 404 …) and ``[{code,
description}]`` — the code is the status, the description names the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from shared.calendar import Duration
from shared.catalogue import FAMILIES, Catalogue, Category
from shared.events import UNSTORABLE, Instant
from shared.grid import GridError, GridNode, GridRegistry
from shared.privacy import mask_text

from . import reports
from .duplicates import place_of

SPEC = "http://wiki.open311.org/GeoReport_v2"
PREFIX = "/open311/v2"
CONTENT_TYPES = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_PAGE_SIZE = 100  # requests a page (the spec's default limit is 1000)
MAX_SPAN = timedelta(days=90)  # start_date … end_date, and the default window
MAX_IDS = 100  # service_request_id=a,b,c …
MAX_FORM_FIELDS = 200
TOKEN_PREFIX = "o311-"
RETRY_WINDOW = timedelta(days=1)  # the same form again within it: a retry
TOKEN = re.compile(rf"^{TOKEN_PREFIX}[0-9a-f]{{32}}\Z")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")  # a case id's shape
_ATTRIBUTE = re.compile(r"^attribute\[([^\[\]]{1,64})\](\[\])?\Z")

# A list in XML: the element of its plural name holds one element per item.
PLURALS = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
}
_XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
# characters XML 1.0 cannot carry (a description may hold them): shown as U+FFFD
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# -- errors ---------------------------------------------------------------------------------
class Open311Error(Exception):
    """An answer of ``status`` with ``[{code, description}]``; ``headers`` go with it
    (``Retry-After`` for a 429)."""

    def __init__(self, status: int, *descriptions: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__("; ".join(descriptions))
        self.status = status
        self.descriptions = descriptions or ("error",)
        self.headers = dict(headers or {})

    def document(self) -> Document:
        return Document("errors", [{"code": self.status, "description": d}
                                   for d in self.descriptions])


def bad_request(messages: Any, names: Mapping[str, str] | None = None,
                status: int = 400) -> Open311Error:
    """One error per field of marshmallow's (or an ApiError's) ``messages``; ``names``: our
    field (or dotted path) → its Open311 name."""
    return Open311Error(status, *(text if name in _WHOLE else f"{name}: {text}"
                                  for name, text in _flat(messages, names or {})))


_WHOLE = ("_request", "_body", "_schema")  # an error of the whole request, not of a field


def _flat(messages: Any, names: Mapping[str, str], path: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            yield from _flat(value, names, f"{path}.{key}" if path else str(key))
    elif isinstance(messages, list | tuple):
        for value in messages:
            yield from _flat(value, names, path)
    else:
        yield _renamed(path or "_request", names), str(messages)


def _renamed(path: str, names: Mapping[str, str]) -> str:
    parts = path.split(".")
    for n in range(len(parts), 0, -1):  # the longest known prefix
        known = names.get(".".join(parts[:n]))
        if known is not None:
            return known
    return path


# -- documents and their two formats --------------------------------------------------------
@dataclass(frozen=True)
class Document:
    """``root``: the XML root element (``services``, ``service_requests``, ``errors`` …);
    ``body``: a list (one element each, named by ``PLURALS[root]``) or an object."""

    root: str
    body: list[dict[str, Any]] | dict[str, Any]


def render(doc: Document, fmt: str) -> tuple[str, str]:
    """The document as text in ``fmt`` (json or xml), and its content type."""
    if fmt == "json":
        return json.dumps(doc.body, ensure_ascii=False, default=_json_value), CONTENT_TYPES[fmt]
    root = ET.Element(doc.root)
    _fill(root, doc.body)
    ET.indent(root)
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode") + "\n", CONTENT_TYPES[fmt]


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _fill(ET.SubElement(element, key), item)
    elif isinstance(value, list | tuple):
        for item in value:
            _fill(ET.SubElement(element, PLURALS[element.tag]), item)
    else:
        element.text = _xml_text(value)


def _xml_text(value: Any) -> str | None:
    if value is None:
        return None  # an empty element, as the spec's examples show
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return _NOT_XML.sub("\ufffd", str(value))


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def format_of(path: str) -> str:
    """``json`` or ``xml``: the extension the resource was asked for with."""
    fmt = path.rsplit(".", 1)[-1]
    return fmt if fmt in CONTENT_TYPES else "json"


# -- discovery ------------------------------------------------------------------------------
def discovery(url: str, changeset: str, district: str) -> Document:
    """The service discovery document (https://wiki.open311.org/Service_Discovery)."""
    return Document("discovery", {
        "changeset": changeset,
        "contact": f"gridflow, {district}: the district's grid centre (网格化服务管理中心)",
        "key_service": "API keys (gfk_…) are issued by the district's gridflow admins "
                       "(gridflow keys issue --role patrol_app); POST requests needs one "
                       "with report.create",
        "endpoints": [{
            "specification": SPEC,
            "url": url,
            "changeset": changeset,
            "type": "production",
            "formats": [CONTENT_TYPES["xml"].split(";")[0], CONTENT_TYPES["json"].split(";")[0]],
        }],
    })


def check_jurisdiction(value: str | None, root: GridNode) -> None:
    """One jurisdiction is served: the district, by its code or name (optional)."""
    if value and value not in (root.code, root.name):
        raise Open311Error(404, f"jurisdiction_id: {value!r} not found; this endpoint serves "
                                f"{root.code} ({root.name}) only")


# -- services -------------------------------------------------------------------------------
DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")


@dataclass(frozen=True)
class Attribute:
    """A service definition's attribute, and how a POSTed value of it is checked."""

    code: str
    datatype: str
    label: str  # a short name, for the case's description
    description: str
    order: int
    required: bool = False
    variable: bool = True
    datatype_description: str = ""
    values: tuple[tuple[str, str], ...] = ()  # (key, name) of a list's options
    max_length: int = 200

    def as_dict(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "code": self.code,
            "datatype": self.datatype,
            "required": self.required,
            "datatype_description": self.datatype_description or None,
            "order": self.order,
            "description": self.description,
            "values": [{"key": k, "name": n} for k, n in self.values],
        }

    def parse(self, given: list[str]) -> Any:
        """The value of ``attribute[code]`` (every value given for it), or ValueError."""
        if self.datatype == "multivaluelist":
            unknown = [v for v in given if v not in dict(self.values)]
            if unknown:
                raise ValueError(f"unknown value(s) {', '.join(map(repr, unknown))}; "
                                 f"one or more of {', '.join(k for k, _ in self.values)}")
            return list(dict.fromkeys(given))
        if len(given) != 1:
            raise ValueError("takes one value")
        value = given[0]
        if self.datatype == "singlevaluelist":
            if value not in dict(self.values):
                raise ValueError(f"{value!r} is not one of "
                                 f"{', '.join(k for k, _ in self.values)}")
            return value
        if self.datatype == "number":
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
            if not math.isfinite(number) or not 0 < number <= 100_000:
                raise ValueError("must be a number above 0 and at most 100000")
            return number
        if self.datatype == "datetime":
            try:
                return Instant().deserialize(value)
            except ValidationError as exc:
                raise ValueError(f"{value!r}: {' '.join(map(str, exc.messages))} "
                                 "(ISO 8601 with an offset, e.g. 2026-11-23T09:00:00+08:00)"
                                 ) from None
        if not value.strip():
            raise ValueError("must not be blank")
        if len(value) > self.max_length:
            raise ValueError(f"at most {self.max_length} characters")
        if self.datatype == "string" and ("\n" in value or "\r" in value):
            raise ValueError("a string has no line breaks (a text attribute may)")
        return value.strip()

    def shown(self, value: Any) -> str:
        """The value as the case's description shows it."""
        names = dict(self.values)
        if isinstance(value, list):
            return "、".join(names.get(v, v) for v in value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(names.get(value, value))


SEVERITY = Attribute(
    "severity", "singlevaluelist", "紧急程度", order=1,
    description="紧急程度 — how urgent is it? urgent: a danger to people or property now",
    values=(("normal", "一般 (normal)"), ("urgent", "紧急 (urgent)")))
OCCURRED_AT = Attribute(
    "occurred_at", "datetime", "发现时间", order=2,
    description="发现时间 — when was it first seen?",
    datatype_description="ISO 8601 with an offset, e.g. 2026-11-23T09:00:00+08:00; "
                         "not in the future")
IMPACT = Attribute(
    "impact", "multivaluelist", "影响", order=3,
    description="影响 — what does it affect?",
    values=(("traffic", "影响通行 (blocks the way)"), ("safety", "存在安全隐患 (a safety risk)"),
            ("vulnerable", "涉及老人儿童 (affects the elderly or children)"),
            ("recurring", "反复发生 (keeps coming back)")))
LOCATION_DETAIL = Attribute(
    "location_detail", "text", "具体位置", order=4,
    description="具体位置 — where exactly: unit, floor, door, landmark",
    datatype_description="at most 500 characters", max_length=500)
ASSET_CODE = Attribute(
    "asset_code", "string", "部件编号", order=5,
    description="部件编号 — the number on the facility's plate, if it has one",
    datatype_description="at most 32 characters", max_length=32)
QUANTITY = Attribute(
    "quantity", "number", "数量", order=6,
    description="数量 — how many are broken, missing or misused?",
    datatype_description="a number above 0")
# mapped onto the report's own fields; the others go into its description
MAPPED = ("severity", "occurred_at")


def attributes_for(category: Category) -> tuple[Attribute, ...]:
    """Every category: severity, when it was seen, what it affects, where exactly; a
    component (部件: a facility) also its plate number and how many."""
    common = (SEVERITY, OCCURRED_AT, IMPACT, LOCATION_DETAIL)
    return (*common, ASSET_CODE, QUANTITY) if category.family == "component" else common


def service_view(category: Category, catalogue: Catalogue) -> dict[str, Any]:
    """A minor category as an Open311 service (GET services)."""
    lead = catalogue.departments[category.lead].name if category.lead in \
        catalogue.departments else category.lead
    return {
        "service_code": category.code,
        "service_name": category.name,
        "description": f"{FAMILIES[category.family]} · {category.major_name} · {category.name}"
                       + (f" ({category.name_en})" if category.name_en else "")
                       + f". {lead}: {_deadlines(category)}",
        "metadata": bool(attributes_for(category)),
        "type": "realtime",  # the service_request_id is in the POST's answer
        "keywords": ", ".join(dict.fromkeys(k for k in (
            category.name, category.name_en, category.major_name,
            FAMILIES[category.family], category.family, category.code) if k)),
        "group": category.major_name,
    }


def service_definition(category: Category) -> Document:
    return Document("service_definition", {
        "service_code": category.code,
        "attributes": [a.as_dict() for a in attributes_for(category)],
    })


_ZH_UNITS = {"minutes": "分钟", "hours": "小时", "days": "天", "working_hours": "个工作小时",
             "working_days": "个工作日"}
_EN_UNITS = {"minutes": "minute", "hours": "hour", "days": "day",
             "working_hours": "working hour", "working_days": "working day"}


def duration_words(d: Duration) -> tuple[str, str]:
    """``4wh`` → (``4个工作小时``, ``4 working hours``)."""
    en = _EN_UNITS[d.unit] + ("" if d.amount == 1 else "s")
    return f"{d.amount}{_ZH_UNITS[d.unit]}", f"{d.amount} {en}"


def _deadlines(category: Category) -> str:
    (ri_zh, ri_en), (rs_zh, rs_en) = duration_words(category.report_in), \
        duration_words(category.resolve)
    return (f"{ri_zh}内响应，{rs_zh}内处置 "
            f"(reports in within {ri_en} and resolves within {rs_en})")


def service_notice(category: Category, catalogue: Catalogue) -> str:
    """What is to be done and by when: the lead department and the category's deadlines."""
    lead = catalogue.departments[category.lead].name if category.lead in \
        catalogue.departments else category.lead
    return f"{lead} {_deadlines(category)}"


# -- requests (cases) as anyone may see them -------------------------------------------------
REQUEST_FIELDS = (
    "service_request_id", "status", "status_notes", "service_name", "service_code",
    "description", "agency_responsible", "service_notice", "requested_datetime",
    "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat",
    "long", "media_url",
)


def request_view(public: Mapping[str, Any], *, service_notice: str | None,
                 place: GridNode | None, grid: GridRegistry) -> dict[str, Any]:
    """A case's public view (``views.public_view``: no reporter) as an Open311 request, in
    the spec's field order: the address is the place's path from the most specific to the
    most general; lat/long the reported point, else the centre of the building or compound
    (as duplicates are found); phone and ID numbers in the description are masked."""
    point = place_of(public.get("lat"), public.get("long"), place.code, grid) \
        if place is not None else None
    out = {
        **{k: public.get(k) for k in REQUEST_FIELDS},
        "description": mask_text(public.get("description")) or None,
        "service_notice": service_notice,
        "address": address_of(place) if place is not None else None,
        "address_id": place.code if place is not None else public.get("address_id"),
        "zipcode": None,
        "lat": round(point[0], 6) if point else public.get("lat"),
        "long": round(point[1], 6) if point else public.get("long"),
    }
    return {k: out[k] for k in REQUEST_FIELDS}


def address_of(node: GridNode) -> str:
    """``1栋, 通工小区, 桐梓林一片区, 桐梓林社区, 青江街道, 雨城区``."""
    return ", ".join(n.name for n in node.ancestors())


def token_document(token: str, case_id: str) -> Document:
    return Document("service_requests", [{"service_request_id": case_id, "token": token}])


# -- GET requests ---------------------------------------------------------------------------
class _CommaList(fields.String):
    """``a,b,c`` → ``["a", "b", "c"]``, each checked by ``item``; at most ``limit``."""

    def __init__(self, item: validate.Validator, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.item, self.limit = item, limit

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[str]:
        text = super()._deserialize(value, attr, data, **kwargs)
        items = list(dict.fromkeys(i.strip() for i in text.split(",") if i.strip()))
        if not items:
            raise ValidationError("give one or more, comma separated")
        if len(items) > self.limit:
            raise ValidationError(f"at most {self.limit}")
        for i in items:
            self.item(i)
        return items


class RequestsQuery(Schema):
    """GET requests' arguments. Unknown ones are ignored (a client may send its own, a
    cache buster …); an empty one is as if not sent (the spec's "optional")."""

    class Meta:
        unknown = EXCLUDE

    jurisdiction_id = fields.String(validate=validate.Length(max=64))
    service_request_id = _CommaList(validate.Regexp(_ID, error="{input!r} is no request id"),
                                    MAX_IDS)
    service_code = _CommaList(validate.Length(max=32), 100)
    start_date = Instant()
    end_date = Instant()
    status = _CommaList(validate.OneOf(("open", "closed")), 2)
    page = fields.Integer(load_default=1, validate=validate.Range(1, 100_000))
    page_size = fields.Integer(load_default=MAX_PAGE_SIZE,
                               validate=validate.Range(1, MAX_PAGE_SIZE))


def present(params: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments given with a value: an empty one counts as not given."""
    return {k: v for k, v in params.items() if v not in ("", None)}


def window(start: datetime | None, end: datetime | None,
           now: datetime) -> tuple[datetime, datetime]:
    """The requested_datetime range: at most 90 days, the last 90 by default; one end
    given, the other 90 days from it (not beyond now)."""
    if start is None and end is None:
        return now - MAX_SPAN, now
    if start is None:
        assert end is not None
        return end - MAX_SPAN, end
    if end is None:
        return start, max(start, min(start + MAX_SPAN, now))
    if end < start:
        raise Open311Error(400, "end_date: lies before start_date")
    if end - start > MAX_SPAN:
        raise Open311Error(400, "start_date, end_date: may span at most 90 days")
    return start, end


def check_codes(codes: Sequence[str], catalogue: Catalogue) -> None:
    unknown = [c for c in codes if c not in catalogue]
    if unknown:
        raise Open311Error(400, f"service_code: unknown {', '.join(unknown)} "
                                "(GET services lists them)")


# -- POST requests --------------------------------------------------------------------------
def parse_form(raw: bytes, mimetype: str) -> list[tuple[str, str]]:
    """The urlencoded form's fields, in order, or a 400 saying what is wrong."""
    if mimetype and mimetype != FORM_TYPE:
        raise Open311Error(400, f"send the request as {FORM_TYPE}, not {mimetype}")
    try:
        items = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict",
                          max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError:
        raise Open311Error(400, "the form is not UTF-8") from None
    except ValueError:
        raise Open311Error(400, f"at most {MAX_FORM_FIELDS} form fields") from None
    for key, value in items:
        if UNSTORABLE.search(key) or UNSTORABLE.search(value):
            name = key if not UNSTORABLE.search(key) else "a field name"
            raise Open311Error(400, f"{name}: holds a character no database keeps "
                                    "(a NUL or a lone surrogate)")
    return items


class PostForm(Schema):
    """POST requests' fields, but ``api_key`` (checked first) and ``attribute[…]``
    (checked against the service definition). Unknown fields are ignored: 311 clients
    send extensions of their own; an empty field is as if not sent. Phone, names,
    description and media URL are checked as a patrol app's report is
    (``reports.ReportBody``)."""

    class Meta:
        unknown = EXCLUDE

    jurisdiction_id = fields.String(validate=validate.Length(max=64))
    service_code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    lat = fields.Float(validate=validate.Range(-90, 90), allow_nan=False)
    lng = fields.Float(data_key="long", validate=validate.Range(-180, 180), allow_nan=False)
    address_string = fields.String(validate=validate.Length(max=200))
    address_id = fields.String(
        validate=validate.Regexp(r"^[0-9]{6,24}\Z", error="a grid code (digits): a compound's "
                                                          "or a building's"))
    email = fields.Email(validate=validate.Length(max=254))
    device_id = fields.String(validate=validate.Length(max=56))
    account_id = fields.String(validate=validate.Length(max=64))
    first_name = fields.String(validate=validate.Length(max=31))
    last_name = fields.String(validate=validate.Length(max=32))
    phone = fields.String(validate=validate.Length(max=32))
    description = fields.String()
    media_url = fields.String()

    @validates_schema
    def _location(self, data: dict[str, Any], **_: Any) -> None:
        has_lat, has_lng = "lat" in data, "lng" in data
        if has_lat != has_lng:
            raise ValidationError({"long" if has_lat else "lat": ["give lat and long together"]})
        if not has_lat and "address_id" not in data and not data.get("address_string", "").strip():
            raise ValidationError({"lat": [
                "a location is required: lat and long, address_string or address_id"]})


def attributes_of(items: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``attribute[code]=v`` and ``attribute[code][]=v1&attribute[code][]=v2`` → ``{code:
    [v, …]}`` (empty values dropped); a malformed ``attribute…`` field is a 400."""
    out: dict[str, list[str]] = {}
    for key, value in items:
        if not key.startswith("attribute"):
            continue
        m = _ATTRIBUTE.match(key)
        if m is None:
            raise Open311Error(400, f"{key[:80]}: write attribute[code]=value, or "
                                    "attribute[code][]=value for each of several")
        if value != "":
            out.setdefault(m.group(1), []).append(value)
    return out


def check_attributes(category: Category, given: Mapping[str, list[str]]) -> dict[str, Any]:
    """The attributes' values, checked against the service definition: every error names
    its attribute."""
    defs = {a.code: a for a in attributes_for(category)}
    errors = [f"attribute[{code}]: service {category.code} has no attribute {code!r} "
              f"(GET services/{category.code} lists them)"
              for code in given if code not in defs]
    values: dict[str, Any] = {}
    for a in defs.values():
        if a.code not in given:
            if a.required:
                errors.append(f"attribute[{a.code}]: required")
            continue
        try:
            values[a.code] = a.parse(given[a.code])
        except ValueError as exc:
            errors.append(f"attribute[{a.code}]: {exc}")
    if errors:
        raise Open311Error(400, *errors)
    return values


def tokens_for(key_id: str, items: Iterable[tuple[str, str]],
               now: datetime) -> tuple[str, str]:
    """The token (and idempotency key) of a form posted now, and the one the same form had
    if it was first posted the day before. It is the API key's id, the form (in any order,
    but the key's secret and the empty fields) and the day: the same client posting the
    same form again within ``RETRY_WINDOW`` of the first time — a retry after a lost
    answer — gets the same service request back (the caller looks the earlier token up);
    the same form later is a new report (a duplicate of the first while that is open)."""
    items = list(items)
    day = int(now.timestamp() // RETRY_WINDOW.total_seconds())
    return token_for(key_id, items, day), token_for(key_id, items, day - 1)


def token_for(key_id: str, items: Iterable[tuple[str, str]], day: int) -> str:
    text = f"{day}:{canonical(key_id, items)}"
    return TOKEN_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:32]


def canonical(key_id: str, items: Iterable[tuple[str, str]]) -> str:
    kept = sorted((k, v) for k, v in items if k != "api_key" and v != "")
    return json.dumps([key_id, kept], ensure_ascii=False, separators=(",", ":"))


def locate_address(grid: GridRegistry, text: str) -> GridNode:
    """The compound (cell) or building an ``address_string`` names, from the most specific
    to the most general as the spec asks (``1栋, 通工小区, 青江街道``) or run together
    (``通工小区1栋``), or a grid code; other words in it (a city, a postal code) are
    ignored. A building needs its compound named too (every compound has a 1栋). Names of
    nodes above the cell must be ones the place lies in. ValueError says what is wrong."""
    text = text.strip()
    if re.fullmatch(r"[0-9]{6,24}", text):
        try:
            cell, building = grid.cell_for_code(text)
        except GridError as exc:
            raise ValueError(str(exc)) from None
        return building or cell
    named = [n for n in grid.nodes() if n.name and _names(text, n.name)]
    depth = {n.code: grid.levels.depth(n.level) for n in named}
    cell_depth = grid.levels.depth(grid.levels.cell_level)
    found: list[GridNode] = []
    for n in named:
        if depth[n.code] < cell_depth:
            continue
        ancestors = {a.code for a in n.ancestors()}
        cell = next(a for a in n.ancestors() if a.level == grid.levels.cell_level)
        if cell.code not in depth:
            continue  # a building named without its compound
        if all(m.code in ancestors for m in named if depth[m.code] < cell_depth):
            found.append(n)
    deepest = max((depth[n.code] for n in found), default=None)
    found = [n for n in found if depth[n.code] == deepest]
    if len(found) == 1:
        return found[0]
    where = f"{grid.root.name} ({grid.root.code})"
    if found:
        raise ValueError(f"names several places of {where}: "
                         + ", ".join(f"{address_of(n)} ({n.code})" for n in found[:5])
                         + "; name one")
    raise ValueError(f"names no compound (小区) or building of {where} that the other names "
                     f"in it contain; give a compound's name with its building (通工小区 1栋), "
                     f"address_id (a grid code), or lat and long")


def _names(text: str, name: str) -> bool:
    """``name`` occurs in ``text`` as a word of its own where it begins or ends with a
    letter or digit (``1栋`` is not in ``11栋``)."""
    start = text.find(name)
    while start >= 0:
        end = start + len(name)
        before = text[start - 1] if start else ""
        after = text[end] if end < len(text) else ""
        if not (_joined(before, name[0]) or _joined(name[-1], after)):
            return True
        start = text.find(name, start + 1)
    return False


def _joined(a: str, b: str) -> bool:
    """Two characters that would run into one word: digits, or ASCII letters."""
    return bool(a and b) and ((a.isdigit() and b.isdigit())
                              or (a.isascii() and a.isalpha() and b.isascii() and b.isalpha()))


def reporter_of(form: Mapping[str, Any]) -> dict[str, Any]:
    """The reporter (kind ``app``): the account id, else ``device:<id>``, else
    ``email:<hash>`` (the address itself is not kept: nothing here masks it); the name
    given + family (a Chinese name family first); the phone."""
    first, last = form.get("first_name", "").strip(), form.get("last_name", "").strip()
    cjk = not any(c.isascii() and c.isalpha() for c in first + last)
    name = f"{last}{first}" if cjk else " ".join(p for p in (first, last) if p)
    if form.get("account_id"):
        rid = form["account_id"]
    elif form.get("device_id"):
        rid = f"device:{form['device_id']}"
    elif form.get("email"):
        rid = "email:" + hashlib.sha256(form["email"].strip().lower().encode()).hexdigest()[:24]
    else:
        rid = ""
    return {"kind": "app", "id": rid, "name": name, "phone": form.get("phone", "").strip()}


def report_of(form: Mapping[str, Any], values: Mapping[str, Any], category: Category,
              location: Mapping[str, Any], report_id: str) -> dict[str, Any]:
    """The report a patrol app would post for this form (``reports.ReportBody``, not yet
    loaded), at ``location`` (``grid_code``, or ``lat`` and ``lng``): severity and
    occurred_at from their attributes; the other attributes and the address_string (a
    door, a unit: more than the grid knows) after the description."""
    defs = {a.code: a for a in attributes_for(category)}
    extras = [f"{defs[c].label}: {defs[c].shown(v)}" for c, v in values.items()
              if c not in MAPPED]
    if form.get("address_string"):
        extras.append(f"地址: {form['address_string'].strip()}")
    text = (form.get("description") or "").strip() or category.name
    if extras:
        text += "\n[Open311] " + "; ".join(extras)
    occurred = values.get("occurred_at")
    return {
        "report_id": report_id,
        "category": category.code,
        **location,
        "description": text,
        "reporter": reporter_of(form),
        "media_urls": [form["media_url"].strip()] if form.get("media_url") else [],
        "occurred_at": occurred.isoformat() if occurred else None,
        "severity": values.get("severity", "normal"),
    }


# our report's fields (and dotted paths) → the Open311 fields they came from
REPORT_FIELDS = {
    "report_id": "token",
    "category": "service_code",
    "grid_code": "address_id",
    "lat": "lat",
    "lng": "long",
    "description": "description",
    "media_urls": "media_url",
    "occurred_at": "attribute[occurred_at]",
    "severity": "attribute[severity]",
    "reporter.phone": "phone",
    "reporter.name": "first_name, last_name",
    "reporter.id": "account_id",
}


def location_of(form: Mapping[str, Any], grid: GridRegistry) -> tuple[dict[str, Any], bool]:
    """Where the report is — lat and long, else address_id (a grid code), else the
    address_string's compound or building — and whether the address_string said so."""
    if "lat" in form:
        return {"lat": form["lat"], "lng": form["lng"]}, False
    if "address_id" in form:
        return {"grid_code": form["address_id"]}, False
    try:
        node = locate_address(grid, form["address_string"])
    except ValueError as exc:
        raise Open311Error(400, f"address_string: {exc}") from None
    return {"grid_code": node.code}, True


def report_fields(by_address: bool) -> dict[str, str]:
    """Our report's field names → the Open311 fields they came from."""
    return {**REPORT_FIELDS, "grid_code": "address_string" if by_address else "address_id"}


def load_report(raw: dict[str, Any], by_address: bool) -> dict[str, Any]:
    """``reports.ReportBody`` of the mapped form, or a 400 naming the Open311 fields."""
    try:
        return reports.ReportBody().load(raw)
    except ValidationError as exc:
        raise bad_request(exc.messages, report_fields(by_address)) from None


def created(case_id: str, token: str, notice: str, account_id: str | None) -> Document:
    """POST requests' answer: the request's id at once (``realtime``), and its token too
    (``tokens/{token}`` maps it to the id), the notice, the client's account_id."""
    return Document("service_requests", [{
        "service_request_id": case_id,
        "token": token,
        "service_notice": notice,
        "account_id": account_id,
    }])
