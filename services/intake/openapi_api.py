"""intake describes itself: ``GET /api/v1/openapi.json``, the OpenAPI 3 document of the
native API this container serves (every route but Open311's), generated from the routes and
the marshmallow schemas they load (``shared.openapi``); and ``GET /api/v1/docs``, a page
that renders it (``web/docs.html``: its own small script, no CDN; it fetches nothing but the
document). Both are public: integrators read them without a key. Mixed into
``IntakeService``."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any

from werkzeug.wrappers import Request, Response

from shared.extensions.http import json_http
from shared.openapi import OpenApiDocument

WEB = Path(__file__).with_name("web")
DESCRIPTION = """\
gridflow's intake: reports in, cases out, and what departments, grid workers and operators \
do with them. Every operation but the public ones takes an API key, \
`Authorization: Bearer gfk_…`; its role and scope decide what it may do (each operation \
names its action and the roles that may take it).

Errors are JSON, `{"errors": {field: [reason, …]}}`, naming the field at fault: a body that \
is not JSON is a 400; one that fails validation a 422; no or a bad key a 401; outside the \
key's role or scope a 403; an unknown id a 404; the wrong state for an action a 409; a body \
over 256 KB a 413; over the key's rate a 429; a database or broker that cannot be reached \
a 503 (nothing was kept, try again).

This document is generated from the service's routes and the marshmallow schemas they \
validate with; the page `/api/v1/docs` renders it."""


@cache
def docs_page() -> tuple[bytes, str]:
    """The page, and a Content-Security-Policy that lets only its own inline script and
    style run (by their hashes) and fetch only from this origin."""
    html = (WEB / "docs.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
            for b in blocks)

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
           "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
           "frame-ancestors 'none'")
    return html.encode(), csp


# Routes of other APIs, which their own specifications describe: Open311 GeoReport v2.
NOT_NATIVE = ("/open311/",)


class OpenApiDocs:
    openapi_document = OpenApiDocument("gridflow intake API", DESCRIPTION, exclude=NOT_NATIVE)

    @json_http("GET", "/api/v1/openapi.json", public=True, tag="docs",
               summary="This API's OpenAPI 3 document")
    def openapi_json(self, request: Request) -> dict[str, Any]:
        """Generated from the routes this service has and the schemas they validate with."""
        return self.openapi_document  # type: ignore[return-value]

    @json_http("GET", "/api/v1/docs", public=True, tag="docs",
               responses={200: {"text/html": None}}, summary="This API's documentation page")
    def api_docs(self, request: Request) -> Response:
        """A page rendering ``/api/v1/openapi.json``: operations by tag, their parameters,
        request bodies, responses and who may call them."""
        body, csp = docs_page()
        return Response(body, mimetype="text/html", headers={
            "Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"})
