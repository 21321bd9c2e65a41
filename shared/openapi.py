"""A service's OpenAPI 3 document, generated from its ``@json_http`` routes.

Nothing here is written by hand about a route: the paths, methods and path parameters are
the werkzeug rules the routes are registered with (``<case_id>`` → ``{case_id}``, a string;
``<int:task_id>`` → an integer); the request bodies and query strings are the marshmallow
schemas each route declares it loads (``RouteDoc``, the decorator's metadata), turned into
JSON Schema by apispec's marshmallow plugin; who may call a route is its ``action`` and the
roles of ``shared.access.ACTIONS``; the error answers follow from what the route takes (a
body: 400, 413, 422; a query string: 422; a path value: 404; a key: 401, 403, 429) and what
it declares (409 …). ``OpenApiDocument`` builds the document from the routes a running
container really has; ``routes_of`` reads them off a service class (for tests and tools).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import EXCLUDE, Schema, fields
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR, DependencyProvider

from shared.access import ACTIONS, ROLES
from shared.config import setting
from shared.extensions.http import MAX_BODY_BYTES, MAX_INT_PARAM, JsonHttpHandler

OPENAPI_VERSION = "3.0.3"
API_KEY, METRICS_TOKEN = "apiKey", "metricsToken"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    API_KEY: {
        "type": "http", "scheme": "bearer", "bearerFormat": "gfk_<key id>_<secret>",
        "description": "An API key, `Authorization: Bearer gfk_…` (or `X-Api-Key: gfk_…`). "
                       "Its role and scope decide what it may do: see each operation.",
    },
    METRICS_TOKEN: {
        "type": "http", "scheme": "bearer",
        "description": "The scraper's token (`GRIDFLOW_METRICS_TOKEN`), not an API key.",
    },
}


class ErrorBody(Schema):
    """Every refusal: each field at fault (``_body``, ``_auth``, ``_request``, ``_service``
    for the request as a whole) with its reasons; a nested field's reasons nest the same
    way (``{"reporter": {"kind": ["…"]}}``, a list's by item index)."""

    class Meta:
        unknown = EXCLUDE

    errors = fields.Dict(keys=fields.String(), values=fields.Raw(), required=True)


# status → (component name, description, headers)
ERRORS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    400: ("BadRequest", "The body is not JSON.", ()),
    401: ("Unauthorized", "No key, not a key, an unknown or revoked key, or a wrong secret.",
          ("WWW-Authenticate",)),
    403: ("Forbidden", "The key's role may not take this action, or the target lies outside "
                       "its scope (its grid, its department).", ()),
    404: ("NotFound", "Nothing has that id (the case, the extension, the task, the key …).", ()),
    409: ("Conflict", "The case's state or the caller's place does not allow it (the reason is "
                      "given), or an id is taken with a different body.", ()),
    413: ("PayloadTooLarge", f"The body is larger than {MAX_BODY_BYTES} bytes.", ()),
    422: ("Unprocessable", "A field fails validation: unknown, missing, mistyped, out of range "
                          "or naming nothing known; each field is named with the reasons.", ()),
    429: ("TooManyRequests", "Over the key's rate; try again after `Retry-After` seconds.",
          ("Retry-After",)),
    503: ("Unavailable", "The database or the broker cannot be reached: nothing was kept; try "
                         "again after `Retry-After` seconds.", ("Retry-After",)),
}
HEADERS: dict[str, dict[str, Any]] = {
    "WWW-Authenticate": {"description": "`Bearer realm=\"gridflow\"`",
                         "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}},
}
SUCCESS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content"}

_RULE = re.compile(r"<(?:(?P<conv>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")
# werkzeug's converters as JSON Schema: a default one is a non-empty segment without a slash;
# an int is unsigned, and one beyond 64 bits names nothing (shared.extensions.http).
CONVERTERS: dict[str, dict[str, Any]] = {
    "default": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "string": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "int": {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_INT_PARAM},
    "float": {"type": "number", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
    "path": {"type": "string", "minLength": 1},
}


@dataclass(frozen=True)
class Route:
    """One method of one ``@json_http`` route, and the function that handles it."""

    method: str
    url: str
    name: str
    handler: JsonHttpHandler
    func: Callable[..., Any]


def _routes(pairs: Iterable[tuple[str, JsonHttpHandler, Callable[..., Any]]]) -> list[Route]:
    out = [Route(m.strip().upper(), h.url, name, h, fn) for name, h, fn in pairs
           for m in h.method.split(",")]
    return sorted(out, key=lambda r: (r.url, r.method))


def routes_of(service_cls: type) -> list[Route]:
    """The routes of a service class, found as nameko's container finds them."""
    return _routes(
        (name, ep, fn) for name, fn in inspect.getmembers(service_cls, inspect.isfunction)
        for ep in getattr(fn, ENTRYPOINT_EXTENSIONS_ATTR, ()) if isinstance(ep, JsonHttpHandler)
    )


def container_routes(container: Any) -> list[Route]:
    """The routes a running container serves."""
    return _routes(
        (ep.method_name, ep, getattr(container.service_cls, ep.method_name))
        for ep in container.entrypoints if isinstance(ep, JsonHttpHandler)
    )


def path_of(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """A werkzeug rule as an OpenAPI path and its path parameters."""
    params = [{"in": "path", "name": m["name"], "required": True,
               "schema": dict(CONVERTERS.get(m["conv"] or "default", CONVERTERS["default"]))}
              for m in _RULE.finditer(rule)]
    return _RULE.sub(lambda m: "{" + m["name"] + "}", rule), params


def tag_of(route: Route) -> str:
    if route.handler.doc.tag:
        return route.handler.doc.tag
    parts = [p for p in route.url.split("/") if p]
    if parts[:2] == ["api", "v1"] and len(parts) > 2:
        if "assignments" in parts or "extensions" in parts:
            return "assignments"
        return re.sub(r"\.\w+$", "", parts[2])
    return "service"


def _markdown(text: str) -> str:
    """A docstring's paragraph on one line, its ``literals`` as Markdown's `code`."""
    return re.sub(r"``(.+?)``", r"`\1`", " ".join(text.split()))


def _paragraphs(func: Callable[..., Any]) -> list[str]:
    doc = inspect.getdoc(func) or ""
    return [_markdown(p) for p in re.split(r"\n\s*\n", doc) if p.strip()]


def _who(route: Route) -> tuple[str, list[dict[str, list[str]]]]:
    """What the operation's description says of who may call it, and its security."""
    h = route.handler
    if h.doc.security:
        return (SECURITY_SCHEMES[h.doc.security]["description"], [{h.doc.security: []}])
    if h.public or h.action is None:
        return "Public: no API key.", []
    what, roles = ACTIONS[h.action]
    allowed = ", ".join(r for r in ROLES if r in roles)
    return (f"Action `{h.action}` ({what}): {allowed}.", [{API_KEY: []}])


def _content(what: Any, default_media: str = "application/json") -> dict[str, Any]:
    media = what if isinstance(what, Mapping) else {default_media: what}
    out = {}
    for kind, schema in media.items():
        if schema is None:
            schema = {"type": "object"} if kind.endswith("json") else {"type": "string"}
        out[kind] = {"schema": schema}
    return out


def operation(route: Route, path_params: list[dict[str, Any]]) -> dict[str, Any]:
    h, doc = route.handler, route.handler.doc
    paragraphs = _paragraphs(route.func)
    if doc.summary:
        summary, rest = doc.summary, paragraphs
    else:
        summary = paragraphs[0] if paragraphs else route.name.replace("_", " ").capitalize()
        rest = paragraphs[1:]
    who, security = _who(route)
    op: dict[str, Any] = {
        "operationId": route.name if "," not in h.method else f"{route.name}_{route.method}",
        "summary": summary,
        "description": "\n\n".join([*rest, who]),
        "tags": [tag_of(route)],
        "security": security,
    }
    if h.action in ACTIONS and not h.public:
        op["x-gridflow-action"] = h.action
        op["x-gridflow-roles"] = [r for r in ROLES if r in ACTIONS[h.action][1]]
    params = list(path_params)
    if doc.query is not None:
        params.append({"in": "query", "schema": doc.query})
    if params:
        op["parameters"] = params
    if doc.body is not None:
        op["requestBody"] = {"required": not doc.body_optional,
                             "content": _content(doc.body)}

    errors = set(doc.errors)
    if security and API_KEY in security[0]:
        errors |= {401, 403, 429}
    elif security:
        errors.add(401)
    if doc.body is not None:
        errors |= {400, 413, 422}
    if doc.query is not None:
        errors.add(422)
    if path_params:
        errors.add(404)
    errors.add(503)
    responses: dict[str, Any] = {}
    for status, what in (doc.responses or {200: None}).items():
        responses[str(status)] = {"description": SUCCESS.get(status, str(status)),
                                  "content": _content(what)}
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    op["responses"] = responses
    return op


def build(routes: Iterable[Route], *, title: str, version: str, description: str = "",
          servers: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI document of these routes, as a JSON-ready dict."""
    classes: dict[str, type] = {}

    def name_of(schema: Any) -> str:
        cls = schema if isinstance(schema, type) else type(schema)
        name = cls.__name__
        if classes.setdefault(name, cls) is not cls:
            name = f"{cls.__module__.replace('.', '_')}.{name}"
            classes[name] = cls
        return name

    spec = APISpec(title=title, version=version, openapi_version=OPENAPI_VERSION,
                   plugins=[MarshmallowPlugin(schema_name_resolver=name_of)],
                   info={"description": description} if description else {},
                   servers=[{"url": s} for s in servers])
    for scheme, definition in SECURITY_SCHEMES.items():
        spec.components.security_scheme(scheme, definition)
    spec.components.schema("ErrorBody", schema=ErrorBody)
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    for _status, (name, text, headers) in sorted(ERRORS.items()):
        response: dict[str, Any] = {
            "description": text,
            "content": {"application/json": {"schema": "ErrorBody"}},
        }
        if headers:
            response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
        spec.components.response(name, response)

    tags: list[str] = []
    for route in routes:
        path, params = path_of(route.url)
        op = operation(route, params)
        tags.extend(t for t in op["tags"] if t not in tags)
        spec.path(path=path, operations={route.method.lower(): op})
    for tag in tags:
        spec.tag({"name": tag})
    doc = spec.to_dict()
    doc["security"] = [{API_KEY: []}]
    _describe_schemas(doc, classes)
    return _portable(doc)


def _describe_schemas(doc: dict[str, Any], classes: Mapping[str, type]) -> None:
    """Each schema's docstring as its description."""
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        cls = classes.get(name)
        text = inspect.getdoc(cls) if cls is not None and cls.__doc__ else None
        if text and "description" not in schema:
            schema["description"] = _markdown(text)


def _portable(node: Any, key: str = "", in_query: bool = False) -> Any:
    """What marshmallow says in Python's terms, in JSON Schema's: a regular expression's
    ``\\A`` / ``\\Z`` as ``^`` / ``$`` (ECMA 262 has no ``\\Z``), a ``url`` format as
    ``uri``; a query parameter is never null (a query string has no null: leave it out)."""
    if isinstance(node, dict):
        if node.get("in") == "query":
            in_query = True
        out = {}
        for k, v in node.items():
            if in_query and k == "nullable":
                continue
            if k == "pattern" and isinstance(v, str):
                v = v.replace("\\A", "^").replace("\\Z", "$")
            elif k == "format" and v == "url":
                v = "uri"
            out[k] = _portable(v, k, in_query)
        return out
    if isinstance(node, list):
        return [_portable(v, key, in_query) for v in node]
    return node


def package_version() -> str:
    try:
        return metadata.version("gridflow")
    except metadata.PackageNotFoundError:
        return "0"


class OpenApiDocument(DependencyProvider):
    """The container's own OpenAPI document (a dict), built once from the routes it serves
    but those under the ``exclude`` prefixes (another API's, with its own specification).
    Its server is ``GRIDFLOW_PUBLIC_URL`` when that is set."""

    def __init__(self, title: str, description: str = "", exclude: tuple[str, ...] = ()) -> None:
        self.title = title
        self.description = description
        self.exclude = exclude
        self.document: dict[str, Any] | None = None

    def get_dependency(self, worker_ctx: Any) -> dict[str, Any]:
        if self.document is None:
            public = setting(self.container.config, "GRIDFLOW_PUBLIC_URL", "") or ""
            routes = [r for r in container_routes(self.container)
                      if not r.url.startswith(self.exclude)]
            self.document = build(routes, title=self.title,
                                  version=package_version(), description=self.description,
                                  servers=[str(public).rstrip("/")] if public else [])
        return self.document
