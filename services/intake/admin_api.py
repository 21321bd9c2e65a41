"""intake's entrypoints for admins: API keys (issue, list, revoke) and the audit log.
Mixed into ``IntakeService``; the SQL is in ``keys``, the rules in ``shared.access``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from nameko.rpc import rpc
from werkzeug.wrappers import Request

from shared import access
from shared.clock import utcnow
from shared.extensions.http import NotFound, json_http, read_json

from . import answers, bodies, keys
from .gate import GATE

if TYPE_CHECKING:
    from shared.access import Principal
    from shared.extensions.store import StoreAccess
    from shared.reference import ReferenceData


class KeyRefused(Exception):
    """An RPC caller's key is not good: ``str()`` says why."""


class AdminApi:
    db: StoreAccess
    ref: ReferenceData
    if TYPE_CHECKING:
        access: Principal | None

    # -- for the monitor: operators sign in there with their keys ------------------------
    @rpc(expected_exceptions=KeyRefused)
    def authenticate(self, token: str) -> dict[str, Any]:
        """Who a key is (``{"key_id", "client", "role", "grid", "department"}``), or
        KeyRefused with the reason (unknown, wrong secret, revoked)."""
        try:
            key_id, secret = access.parse_key(token if isinstance(token, str) else "")
        except access.AccessDenied as exc:
            raise KeyRefused(exc.reason) from exc
        with self.db.read() as s:
            stored = keys.lookup(s, key_id)
        if stored is None or not access.secret_matches(secret, stored.secret_hash):
            raise KeyRefused("unknown API key, or a wrong secret")
        if stored.revoked:
            raise KeyRefused(f"API key {key_id} was revoked")
        return dataclasses.asdict(stored.principal)

    @rpc
    def key_active(self, key_id: str) -> bool:
        with self.db.read() as s:
            stored = keys.lookup(s, str(key_id)[:16])
        return stored is not None and not stored.revoked

    @json_http("POST", "/api/v1/keys", action="keys.manage", body=bodies.IssueKeyBody,
               responses={201: answers.KeyIssued}, summary="Issue an API key")
    def issue_key(self, request: Request) -> tuple[int, dict[str, Any]]:
        """A new key; its token is in this answer only (intake keeps a hash)."""
        body = bodies.IssueKeyBody().load(read_json(request))
        self._known_scope(body)
        assert self.access is not None
        with self.db.transaction() as tx:
            listing, token = keys.issue(tx.session, **body, by=self._by(), now=utcnow())
        return 201, {"key": listing, "token": token}

    @json_http("GET", "/api/v1/keys", action="keys.manage", query=bodies.KeyListQuery,
               responses={200: answers.KeyList}, summary="List the API keys")
    def list_keys(self, request: Request) -> dict[str, Any]:
        q = bodies.KeyListQuery().load(request.args.to_dict())
        with self.db.read() as s:
            return {"keys": keys.list_keys(s, include_revoked=q["revoked"])}

    @json_http("POST", "/api/v1/keys/<key_id>/revoke", action="keys.manage",
               responses={200: answers.KeyAnswer}, summary="Revoke an API key")
    def revoke_key(self, request: Request, key_id: str) -> dict[str, Any]:
        with self.db.transaction() as tx:
            listing = keys.revoke(tx.session, key_id, by=self._by(), now=utcnow())
            if listing is None:  # inside: rolled back, so no audit entry says it was done
                raise NotFound({"key_id": [f"no key {key_id}"]})
        request.environ[GATE].forget(key_id)  # other instances: within GRIDFLOW_KEY_CACHE_S
        return {"key": listing}

    @json_http("GET", "/api/v1/audit", action="audit.read", query=bodies.AuditQuery,
               summary="The audit log, newest first")
    def audit(self, request: Request) -> dict[str, Any]:
        """Who did what, when and from where: newest first, filtered."""
        q = bodies.AuditQuery().load(request.args.to_dict())
        with self.db.read() as s:
            return keys.query_audit(s, **q)

    def _by(self) -> str:
        p = self.access
        return "" if p is None else f"{p.client} ({p.key_id})"

    def _known_scope(self, body: dict[str, Any]) -> None:
        from marshmallow import ValidationError

        unknown = keys.unknown_scope(self.ref, body.get("grid"), body.get("department"))
        if unknown:
            field, message = next(iter(unknown.items()))
            raise ValidationError({field: [message]})
