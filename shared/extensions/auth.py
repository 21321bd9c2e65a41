"""The HTTP gate: a service's way of knowing who calls a ``@json_http`` route.

A service that declares an ``Authenticator`` dependency has every route gated: a route
names the action it is (``action=``, see ``shared.access.ACTIONS``) or says it is
``public=True`` (``/health``); a route that says neither fails the service's start. The
handler (``shared.extensions.http``) asks the gate before any worker runs; a refusal
there, or an ``AccessDenied`` the handler raises once it knows the case, is answered
401 / 403 / 429 with the reason, and a 403 is recorded through ``refused``.

For a state-changing request the gate may leave an audit writer in the request
(``AUDIT_WRITER``); the service's units of work call it just before they commit, so
the audit row and the change it records commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nameko.extensions import DependencyProvider
from sqlalchemy.orm import Session
from werkzeug.wrappers import Request

from shared.access import AccessDenied, Principal

PRINCIPAL = "gridflow.principal"  # request.environ: who is asking
AUDIT_WRITER = "gridflow.audit"  # request.environ: Callable[[Session], None], used once
DENIED = "gridflow.denied"  # request.environ: the AccessDenied a handler raised


class Authenticator(DependencyProvider):
    """Subclass: ``authenticate`` (raise AccessDenied to refuse) and ``refused``."""

    def authenticate(self, request: Request, action: str, entrypoint: str) -> Principal:
        raise NotImplementedError

    def refused(self, request: Request, exc: AccessDenied, entrypoint: str) -> None:
        """A known caller was refused (403): record it."""

    def get_dependency(self, worker_ctx: Any) -> Any:
        return principal_of(worker_ctx)


def principal_of(worker_ctx: Any) -> Principal | None:
    request = _request(worker_ctx)
    return None if request is None else request.environ.get(PRINCIPAL)


def _request(worker_ctx: Any) -> Request | None:
    request = worker_ctx.args[0] if worker_ctx is not None and worker_ctx.args else None
    return request if isinstance(request, Request) else None


def pending_audit(worker_ctx: Any) -> Callable[[Session], None] | None:
    """The request's audit writer while no unit of work has committed it."""
    request = _request(worker_ctx)
    return None if request is None else request.environ.get(AUDIT_WRITER)


def audit_committed(worker_ctx: Any) -> None:
    """The audit row is in: later units of work of the same request add none."""
    request = _request(worker_ctx)
    if request is not None:
        request.environ.pop(AUDIT_WRITER, None)


def source_of(request: Request) -> str:
    """Where a request came from: the peer's address, and what a proxy says it forwarded."""
    peer = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    return f"{peer} (forwarded for {forwarded[:120]})" if forwarded else peer
