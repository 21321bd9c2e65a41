"""intake's OpenAPI document (``shared.openapi``): a valid OpenAPI 3 document, generated
from the routes and the marshmallow schemas they really load, with every native route in
it; and the docs page that renders it, which loads nothing from elsewhere."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import pytest
import schemathesis
from marshmallow import Schema

from services.intake import answers, bodies, reports
from services.intake.openapi_api import DESCRIPTION, NOT_NATIVE, WEB, docs_page
from services.intake.service import IntakeService
from shared import access
from shared.openapi import Route, build, path_of, routes_of

ROUTES = [r for r in routes_of(IntakeService) if not r.url.startswith(NOT_NATIVE)]
PUBLIC = {"/health", "/api/v1/openapi.json", "/api/v1/docs"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(json.dumps(build(ROUTES, title="gridflow intake API", version="0",
                                       description=DESCRIPTION)))


def _op(doc: dict[str, Any], method: str, rule: str) -> dict[str, Any]:
    return doc["paths"][path_of(rule)[0]][method.lower()]


def test_the_document_is_valid_openapi_3(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI 3.0 meta-schema


def test_every_native_route_is_in_it_and_nothing_else(doc: dict[str, Any]) -> None:
    assert len(ROUTES) >= 35
    documented = {(path, method.upper()) for path, item in doc["paths"].items()
                  for method in item}
    assert documented == {(path_of(r.url)[0], r.method) for r in ROUTES}
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert not any(p.startswith(NOT_NATIVE) for p in doc["paths"])


def test_path_values_are_typed_as_werkzeug_matches_them(doc: dict[str, Any]) -> None:
    assert path_of("/api/v1/cases/<case_id>/extensions/<int:extension_id>/decision")[0] == \
        "/api/v1/cases/{case_id}/extensions/{extension_id}/decision"
    params = {p["name"]: p for p in _op(
        doc, "POST", "/api/v1/cases/<case_id>/extensions/<int:extension_id>/decision"
    )["parameters"]}
    assert params["case_id"]["schema"]["type"] == "string"
    assert params["extension_id"]["schema"]["type"] == "integer"
    assert params["extension_id"]["schema"]["minimum"] == 0
    assert all(p["required"] and p["in"] == "path" for p in params.values())


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.url}")
def test_who_may_call_each_operation(doc: dict[str, Any], route: Route) -> None:
    op = _op(doc, route.method, route.url)
    if route.url in PUBLIC:
        assert op["security"] == [] and "Public" in op["description"]
    elif route.url == "/metrics":
        assert op["security"] == [{"metricsToken": []}]
    else:
        what, roles = access.ACTIONS[route.handler.action]
        assert op["security"] == [{"apiKey": []}]
        assert f"`{route.handler.action}` ({what})" in op["description"]
        assert set(op["x-gridflow-roles"]) == roles
        assert {"401", "403", "429"} <= set(op["responses"])
    assert op["summary"] and op["tags"]


# -- the schemas in the document are the ones the handlers load ------------------------------
def _schemas_named(source: str, namespace: dict[str, Any]) -> set[type[Schema]]:
    found = set()
    for module, name in re.findall(r"\b(?:(\w+)\.)?([A-Z]\w*)\b", source):
        obj = getattr(namespace.get(module), name, None) if module else namespace.get(name)
        if isinstance(obj, type) and issubclass(obj, Schema) and obj._declared_fields and \
                obj.__module__ != answers.__name__:  # a request's schema, not a base or answer
            found.add(obj)
    return found


def _loaded(route: Route) -> set[type[Schema]]:
    """The request schemas a handler's code names: its body and those of the ``self._…``
    helpers it calls (the decorator, which declares them, left out)."""
    source = inspect.getsource(route.func)
    source = source[source.index("def "):]
    found = _schemas_named(source, route.func.__globals__)
    for helper in set(re.findall(r"self\.(_\w+)\(", source)):
        fn = getattr(IntakeService, helper, None)
        if inspect.isfunction(fn):
            found |= _schemas_named(inspect.getsource(fn), fn.__globals__)
    return found


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.url}")
def test_a_route_declares_the_schemas_it_loads(route: Route) -> None:
    declared = {s for s in (route.handler.doc.body, route.handler.doc.query) if s}
    assert _loaded(route) == declared, (
        f"{route.name}: declare body= / query= on its @json_http for its OpenAPI document")


def test_a_request_body_is_the_marshmallow_schema(doc: dict[str, Any]) -> None:
    body = _op(doc, "POST", "/api/v1/reports")["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    fields = reports.ReportBody().fields
    assert set(schema["properties"]) == set(fields)
    assert set(schema["required"]) == {n for n, f in fields.items() if f.required}
    assert schema["additionalProperties"] is False  # unknown fields are refused
    assert schema["properties"]["severity"]["enum"] == ["normal", "urgent"]
    assert schema["properties"]["report_id"]["pattern"].endswith("$")  # not Python's \Z
    assert "\\Z" not in json.dumps(doc)

    ack = _op(doc, "POST", "/api/v1/cases/<case_id>/assignments/<department>/ack")
    assert ack["requestBody"]["required"] is False  # an empty body is {}
    params = {p["name"]: p for p in _op(doc, "GET", "/api/v1/cases")["parameters"]}
    assert set(params) == set(bodies.CaseListQuery().fields)
    assert params["per_page"]["schema"]["maximum"] == 100


def test_answers_and_errors_are_described(doc: dict[str, Any]) -> None:
    report = _op(doc, "POST", "/api/v1/reports")["responses"]
    assert report["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ReportAnswer")
    assert {"400", "409", "413", "422", "503"} <= set(report)
    case = _op(doc, "GET", "/api/v1/cases/<case_id>")["responses"]
    assert case["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/CaseView")
    assert case["404"] == {"$ref": "#/components/responses/NotFound"}
    error = doc["components"]["responses"]["Unprocessable"]["content"]["application/json"]
    assert error["schema"]["$ref"].endswith("/ErrorBody")
    assert doc["components"]["responses"]["TooManyRequests"]["headers"]["Retry-After"]
    csv = _op(doc, "GET", "/api/v1/supervision.csv")["responses"]["200"]["content"]
    assert set(csv) == {"text/csv"}


# -- the docs page -----------------------------------------------------------------------------
def test_the_docs_page_loads_nothing_from_elsewhere() -> None:
    html, csp = docs_page()
    text = html.decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "/api/v1/openapi.json" in text
    assert "innerHTML" not in text  # the document's text goes in as text
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and csp.count("'sha256-") == 2
    assert (WEB / "docs.html").is_file()
