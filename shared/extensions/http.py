"""``@json_http``: nameko's HTTP entrypoint speaking JSON, errors included.

A handler returns ``(status, payload)`` or a payload (200). Errors become JSON bodies:

- ``ApiError`` subclasses carry their status (400, 404, 409, 413, 422 …);
- marshmallow's ``ValidationError`` is a 422 with ``{"errors": {field: [message, …]}}``;
- text no database keeps (a NUL character, an unpaired surrogate) is refused before any
  handler sees it: in a path value it names nothing (404; so does an ``<int:…>`` beyond
  64 bits), in a query string or a JSON body it is a 422 naming the field;
- a database or broker that cannot be reached is a 503: nothing was kept;
- anything else is a 500 with a reference to the log line, never a traceback.

In a service with an ``Authenticator`` (``shared.extensions.auth``) every route names its
``action`` or is ``public``; the gate answers 401 (no or a bad key), 403 (outside the
key's role or scope) and 429 (over its rate) with the reason, before any worker runs.
A body over ``MAX_BODY_BYTES`` is a 413 before anything else.

Every request is counted (``gridflow_http_requests_total``) and timed
(``gridflow_http_request_seconds``) by its route, the URL rule: never the path itself.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu import exceptions as kombu_exc
from marshmallow import Schema, ValidationError
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer
from sqlalchemy import exc as sa_exc
from werkzeug.wrappers import Request, Response

from shared import metrics
from shared.access import AccessDenied
from shared.events import UNSTORABLE, UNSTORABLE_TEXT, unstorable
from shared.extensions.auth import DENIED, PRINCIPAL, Authenticator

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
# An RPC (the ledger) while RabbitMQ is away: kombu's, py-amqp's or the socket's error.
BROKER_UNREACHABLE: tuple[type[BaseException], ...] = (
    kombu_exc.OperationalError, AmqpConnectionError, ConnectionError,
)


class ApiError(Exception):
    status = 400

    def __init__(self, errors: dict[str, list[str]] | str, status: int | None = None) -> None:
        if isinstance(errors, str):
            errors = {"_request": [errors]}
        self.errors = errors
        if status is not None:
            self.status = status
        super().__init__(json.dumps(errors, ensure_ascii=False))


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Unavailable(ApiError):
    status = 503


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        json.dumps(payload, ensure_ascii=False, default=str),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object, or an ApiError naming what is wrong with the body."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    raw = request_body(request)
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(f"body larger than {MAX_BODY_BYTES} bytes", status=413)
    if not raw:
        raise ApiError({"_body": ["a JSON body is required"]})
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError({"_body": [f"not valid JSON: {exc}"]}) from exc
    except RecursionError as exc:  # the decoder recurses once per level of nesting
        raise ApiError({"_body": ["not valid JSON: nested too deeply"]}) from exc
    if not isinstance(body, dict):
        raise ApiError({"_body": ["expected a JSON object"]}, status=422)
    where = unstorable(body)
    if where is not None:
        raise ApiError({where or "_body": [UNSTORABLE_TEXT]}, status=422)
    return body


def request_body(request: Request) -> bytes:
    """The request body, at most MAX_BODY_BYTES + 1 bytes of it.

    A chunked body has no Content-Length, and eventlet's server does not tell werkzeug the
    stream ends (``wsgi.input_terminated``), so werkzeug would read it as empty: read the
    de-chunked stream ourselves.
    """
    if "_gridflow_body" not in request.environ:
        if (
            request.content_length is None
            and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        ):
            data = request.environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
        else:
            data = request.get_data()
        request.environ["_gridflow_body"] = data
    return request.environ["_gridflow_body"]


# What a route's <int:…> may be: a database's 64-bit integer.
MAX_INT_PARAM = 2**63 - 1


@dataclass(frozen=True)
class RouteDoc:
    """What a route tells its OpenAPI document (``shared.openapi``); nothing at run time.

    ``body`` / ``query``: the marshmallow schemas the handler loads its JSON body and its
    query string with (``body_optional``: an empty body is ``{}``); ``responses``: status →
    a schema of the answer, ``None`` (a JSON object) or ``{media type: schema or None}``
    (default ``{200: None}``); ``errors``: the error statuses the handler itself answers
    beyond those the document infers (401/403/429 at the gate, 400/413/422 for a body, 422
    for a query, 404 for a path value, 503); ``summary``: else the docstring's first paragraph;
    ``tag``: else from the path; ``security``: a scheme other than the API key, for a
    ``public`` route that checks a token of its own."""

    body: type[Schema] | None = None
    body_optional: bool = False
    query: type[Schema] | None = None
    responses: Mapping[int, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    summary: str | None = None
    tag: str | None = None
    security: str | None = None


class JsonHttpHandler(HttpRequestHandler):
    def __init__(self, method: str, url: str, *, action: str | None = None,
                 public: bool = False, body: type[Schema] | None = None,
                 body_optional: bool = False, query: type[Schema] | None = None,
                 responses: Mapping[int, Any] | None = None, errors: Iterable[int] = (),
                 summary: str | None = None, tag: str | None = None,
                 security: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("expected_exceptions", (ApiError, ValidationError, AccessDenied))
        super().__init__(method, url, **kwargs)
        self.action = action
        self.public = public
        self.doc = RouteDoc(body, body_optional, query, dict(responses or {}), tuple(errors),
                            summary, tag, security)

    def setup(self) -> None:
        super().setup()
        self.gate: Authenticator | None = next(
            (d for d in self.container.dependencies if isinstance(d, Authenticator)), None)
        if self.gate is not None and not self.public and self.action is None:
            raise RuntimeError(f"{self.container.service_name}: {self.method} {self.url} "
                               "must name its action= or be public=True")

    def handle_request(self, request: Request) -> Response:
        started = time.perf_counter()
        response = self._guarded(request)
        metrics.http_answered(self.container.service_name, request.method, self.url,
                              response.status_code, time.perf_counter() - started)
        return response

    def _guarded(self, request: Request) -> Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return self.response_from_exception(
                ApiError(f"body larger than {MAX_BODY_BYTES} bytes", status=413))
        if self.gate is not None and not self.public:
            assert self.action is not None
            try:
                request.environ[PRINCIPAL] = self.gate.authenticate(
                    request, self.action, self.method_name)
            except AccessDenied as exc:
                if exc.status == 403:
                    self.gate.refused(request, exc, self.method_name)
                return self.response_from_exception(exc)
            except Exception as exc:  # the key's lookup met a lost database: a 503 as well
                return self.response_from_exception(exc)
        response = super().handle_request(request)
        denied = request.environ.get(DENIED)
        if denied is not None and denied.status == 403 and self.gate is not None:
            self.gate.refused(request, denied, self.method_name)
        return response

    def handle_result(self, event: Any, worker_ctx: Any, result: Any, exc_info: Any) -> Any:
        if exc_info is not None and isinstance(exc_info[1], AccessDenied):
            worker_ctx.args[0].environ[DENIED] = exc_info[1]
        return super().handle_result(event, worker_ctx, result, exc_info)

    def get_entrypoint_parameters(self, request: Request) -> tuple[tuple, dict[str, Any]]:
        """Path values that can name nothing stored are a 404, and a query string with text
        no database keeps a 422, before any handler (and its database) sees them."""
        args, kwargs = super().get_entrypoint_parameters(request)
        for name, value in kwargs.items():
            if (isinstance(value, str) and UNSTORABLE.search(value)) or (
                isinstance(value, int) and not -MAX_INT_PARAM <= value <= MAX_INT_PARAM
            ):
                raise NotFound({name: [f"no such {name}"]})
        for key, value in request.args.items(multi=True):
            if UNSTORABLE.search(key) or UNSTORABLE.search(value):
                raise ApiError({key if not UNSTORABLE.search(key) else "_query":
                                [UNSTORABLE_TEXT]}, status=422)
        return args, kwargs

    def response_from_result(self, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            status, payload = result
            return json_response(payload, status)
        return json_response(result)

    def response_from_exception(self, exc: BaseException) -> Response:
        if isinstance(exc, AccessDenied):
            headers = {"WWW-Authenticate": 'Bearer realm="gridflow"'} if exc.status == 401 \
                else {"Retry-After": str(max(1, round(exc.retry_after or 1)))} \
                if exc.status == 429 else None
            return json_response({"errors": {"_auth": [exc.reason]}}, exc.status, headers)
        if isinstance(exc, ApiError):
            return json_response({"errors": exc.errors}, exc.status)
        if isinstance(exc, ValidationError):
            messages = exc.messages if isinstance(exc.messages, dict) else {"_body": exc.messages}
            return json_response({"errors": messages}, 422)
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
            log.error("storage unavailable", extra={"error": str(exc)})
            return json_response(
                {"errors": {"_service": ["storage is unavailable; nothing was kept, try again"]}},
                503,
                {"Retry-After": "5"},
            )
        if isinstance(exc, BROKER_UNREACHABLE):
            log.error("broker unavailable", extra={"error": repr(exc)})
            return json_response(
                {"errors": {"_service": ["the message broker is unavailable; try again"]}},
                503,
                {"Retry-After": "5"},
            )
        ref = uuid.uuid4().hex[:12]
        log.error("unhandled error in HTTP handler", extra={"ref": ref, "error": repr(exc)})
        return json_response({"errors": {"_service": [f"internal error (ref {ref})"]}}, 500)


json_http = JsonHttpHandler.decorator


def _start_without_nagle(self: WebServer) -> None:
    """nameko's web server start, with two changes to its socket:

    - TCP_NODELAY (accepted connections inherit it): eventlet writes a response's headers
      and body apart, and Nagle's algorithm held a large body back for the client's delayed
      ACK — 44 ms on every answer over a few KB;
    - no SO_REUSEPORT (eventlet sets it by default): a second process told to listen on a
      port in use must fail to start, not silently take half of the first one's requests.
    """
    if not self._starting:
        self._starting = True
        self._sock = eventlet.listen(self.bind_addr, reuse_port=False)
        self._sock.settimeout(None)  # nameko's workaround of kombu#838
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._serv = self.get_wsgi_server(self._sock, self.get_wsgi_app())
        self._gt = self.container.spawn_managed_thread(self.run)


_nameko_start = WebServer.start
if getattr(WebServer.start, "__name__", "") != "_start_without_nagle":
    WebServer.start = _start_without_nagle  # type: ignore[method-assign]
