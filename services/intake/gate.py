"""intake's HTTP gate: API keys from its own table, a rate per key, the audit writer for
state-changing requests, and the scope checks the handlers make once they know the case.

Keys are looked up by id and cached for ``GRIDFLOW_KEY_CACHE_S`` (10 s): a key revoked
through this instance stops at once, through another (or the command line) within that
time. ``GRIDFLOW_RATE_LIMIT_PER_MIN`` (600) is the rate of a key that names none.
``FormKey`` puts the same gate in a worker, for a key sent in the body (Open311's api_key).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request

from shared import access
from shared.access import AccessDenied, Principal
from shared.clock import utcnow
from shared.config import setting
from shared.extensions.auth import AUDIT_WRITER, PRINCIPAL, Authenticator, source_of
from shared.extensions.store import Store

from . import keys

log = logging.getLogger(__name__)

READ_METHODS = ("GET", "HEAD", "OPTIONS")
GATE = "gridflow.gate"  # request.environ: the gate itself (revoking forgets a cached key)


class ApiKeyGate(Authenticator):
    def setup(self) -> None:
        config = self.container.config
        self.cache_s = float(setting(config, "GRIDFLOW_KEY_CACHE_S", 10.0))
        self.default_rate = int(setting(config, "GRIDFLOW_RATE_LIMIT_PER_MIN", 600))
        self.limiter = access.RateLimiter()
        self._cache: dict[str, tuple[float, keys.StoredKey | None]] = {}
        self.store = next(d for d in self.container.dependencies if isinstance(d, Store))

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    def _stored(self, key_id: str) -> keys.StoredKey | None:
        hit = self._cache.get(key_id)
        if hit is not None and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        with self.store.sessions() as s:
            stored = keys.lookup(s, key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (time.monotonic(), stored)
        return stored

    def authenticate(self, request: Request, action: str, entrypoint: str) -> Principal:
        token = access.token_from(request.headers.get("Authorization"),
                                  request.headers.get("X-Api-Key"))
        return self.admit(request, token, action, entrypoint)

    def admit(self, request: Request, token: str, action: str, entrypoint: str) -> Principal:
        """The key ``token`` may take ``action``: who it is, or AccessDenied (401, 403,
        429). A state-changing request gets its audit writer."""
        key_id, secret = access.parse_key(token)
        stored = self._stored(key_id)
        if stored is None or not access.secret_matches(secret, stored.secret_hash):
            raise access.unauthenticated("unknown API key, or a wrong secret")
        if stored.revoked:
            raise access.unauthenticated(f"API key {key_id} was revoked")
        p = stored.principal
        request.environ[PRINCIPAL] = p
        request.environ[GATE] = self
        rate = self.default_rate if stored.rate_per_min is None else stored.rate_per_min
        self.limiter.take(key_id, rate)
        access.allow(p, action)
        department = (getattr(request, "path_values", None) or {}).get("department")
        if department is not None:  # …/assignments/<department>/…: that department acts
            access.for_department(p, department)
        if request.method not in READ_METHODS:
            request.environ[AUDIT_WRITER] = lambda session: keys.record(
                session, **_entry(request, p, entrypoint, "done"))
        return p

    def refused(self, request: Request, exc: AccessDenied, entrypoint: str) -> None:
        p: Principal | None = request.environ.get(PRINCIPAL)
        if p is None:
            return
        log.warning("refused", extra={"key_id": p.key_id, "role": p.role,
                                      "action": entrypoint, "reason": exc.reason})
        try:
            with self.store.sessions.begin() as s:
                keys.record(s, **_entry(request, p, entrypoint, "denied", exc.status,
                                        exc.reason))
        except Exception as err:  # the refusal stands; its record is best effort
            log.error("could not record a refusal", extra={"error": repr(err)})


class FormKey(DependencyProvider):
    """A key a request carries in its body — Open311's ``api_key`` form field — rather than
    its headers, for a ``public`` route whose handler reads the body first: the worker
    gets a ``KeyCheck`` that asks the service's ``ApiKeyGate`` as the HTTP handler would
    (unknown or revoked key, role, rate, the audit writer) and records a 403 of a known
    key as the handler does."""

    def setup(self) -> None:
        self.gate = next(d for d in self.container.dependencies if isinstance(d, ApiKeyGate))

    def get_dependency(self, worker_ctx: Any) -> KeyCheck:
        return KeyCheck(self.gate, worker_ctx.entrypoint.method_name)


@dataclass(frozen=True)
class KeyCheck:
    gate: ApiKeyGate
    entrypoint: str

    def admit(self, request: Request, token: str, action: str) -> Principal:
        try:
            return self.gate.admit(request, token, action, self.entrypoint)
        except AccessDenied as exc:
            self.refused(request, exc)
            raise

    def refused(self, request: Request, exc: AccessDenied) -> None:
        """A refusal the handler makes once it knows more (the report's cell is outside
        the key's grid): a 403 of a known key is recorded."""
        if exc.status == 403:
            self.gate.refused(request, exc, self.entrypoint)


def _entry(request: Request, p: Principal, entrypoint: str, outcome: str,
           status: int | None = None, reason: str = "") -> dict[str, Any]:
    values = {k: str(v) for k, v in (getattr(request, "path_values", None) or {}).items()}
    target = values.get("case_id") or values.get("key_id") or next(iter(values.values()), "")
    detail: dict[str, Any] = {"path": values} if values else {}
    if reason:
        detail["reason"] = reason
    return dict(at=utcnow(), key_id=p.key_id, actor=p.client, role=p.role, action=entrypoint,
                target=target, outcome=outcome, status=status, via="http",
                source=source_of(request), route=f"{request.method} {request.path}"[:200],
                detail=detail)


# -- scope checks in the handlers ---------------------------------------------------------
def narrowed_department(p: Principal, requested: str | None) -> str | None:
    if p.role != access.DEPARTMENT:
        return requested
    if requested is not None:
        access.for_department(p, requested)
    return p.department
