"""Who may do what: API keys, roles, scopes and the rules between them. Pure Python.

A client holds an API key ``gfk_<key id>_<secret>``. Only the key id and a SHA-256 of the
secret are stored: the secret is 256 random bits, so a fast hash is as safe as a slow one
and a request costs one lookup by primary key. A key carries a *role* and a *scope*:

- ``patrol_app`` — a grid patrol app (or a residents' app): reports, verifies, rates and
  works follow-up tasks in its grid subtree (``grid``: a node code, the whole district when
  empty);
- ``department`` — a departmental system: acts only on its own department's assignments
  and reads only the cases it has one on (``department``);
- ``operator`` — a grid tier's staff: whistles, extensions, reopening, manual dispatch and
  the ledger for the cases in its subtree, speaking for its own node's tier and the tiers
  below it;
- ``admin`` — keys, audit, catalogue and policies, and everything an operator may do
  anywhere.

A refusal is an ``AccessDenied`` carrying its HTTP status (401: no or a bad credential;
403: a known key outside its role or scope; 429: over its rate) and a reason fit for the
client.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PATROL_APP, DEPARTMENT, OPERATOR, ADMIN = "patrol_app", "department", "operator", "admin"
ROLES = (PATROL_APP, DEPARTMENT, OPERATOR, ADMIN)

KEY_PREFIX = "gfk_"
KEY_ID_LEN = 12  # hex characters
_KEY = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{{KEY_ID_LEN}}})_([A-Za-z0-9_-]{{32,128}})$")

# What each action is, and which roles may take it (scope rules come on top).
ACTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "reference.read": ("read the categories and the grid", frozenset(ROLES)),
    "case.public": ("read a case's public view", frozenset(ROLES)),
    "report.create": ("report an issue in a grid cell", frozenset({PATROL_APP, OPERATOR, ADMIN})),
    "case.read": ("read a case with its timeline", frozenset(ROLES)),
    "case.list": ("list cases", frozenset(ROLES)),
    "assignment.respond": (
        "report in, progress, resolve, return, pause, resume, ask for an extension",
        frozenset({DEPARTMENT, ADMIN}),
    ),
    "assignment.request": ("ask another department to assist (协同) or dispatch by hand",
                           frozenset({DEPARTMENT, OPERATOR, ADMIN})),
    "case.verify": ("verify a resolved case on site (核查)",
                    frozenset({PATROL_APP, OPERATOR, ADMIN})),
    "case.rate": ("rate the result (评议)", frozenset({PATROL_APP, OPERATOR, ADMIN})),
    "task.work": ("list and finish follow-up tasks", frozenset({PATROL_APP, OPERATOR, ADMIN})),
    "case.operate": ("whistle, decide extensions, reopen, unlink a duplicate",
                     frozenset({OPERATOR, ADMIN})),
    "stats.read": ("read the funnel, the measures and department figures",
                   frozenset({OPERATOR, ADMIN})),
    "ledger.read": ("read the supervision ledger (督办台账)", frozenset({OPERATOR, ADMIN})),
    "audit.read": ("query the audit log", frozenset({ADMIN})),
    "keys.manage": ("issue, list and revoke API keys", frozenset({ADMIN})),
}
PII_ROLES = frozenset({DEPARTMENT, OPERATOR, ADMIN})  # see reporters' names and phones


class AccessDenied(Exception):
    def __init__(self, status: int, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


def unauthenticated(reason: str) -> AccessDenied:
    return AccessDenied(401, reason)


def forbidden(reason: str) -> AccessDenied:
    return AccessDenied(403, reason)


@dataclass(frozen=True)
class Principal:
    """Who is asking: the key's id, its client's name, its role and its scope."""

    key_id: str
    client: str
    role: str
    grid: str | None = None  # a grid node's code; None: the whole district
    department: str | None = None

    @property
    def sees_personal_data(self) -> bool:
        return self.role in PII_ROLES

    def describe(self) -> str:
        scope = (f"department {self.department}" if self.role == DEPARTMENT
                 else f"grid {self.grid}" if self.grid else "the whole district")
        return f"{self.role} key {self.key_id} ({self.client}; {scope})"


# -- keys ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret_hash: str
    token: str  # shown once, to whoever issued it


def new_key() -> NewKey:
    key_id = secrets.token_hex(KEY_ID_LEN // 2)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, hash_secret(secret), f"{KEY_PREFIX}{key_id}_{secret}")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str]:
    """(key id, secret) of a key as a client sends it, or 401 saying what is wrong."""
    m = _KEY.match(token.strip())
    if m is None:
        raise unauthenticated(f"not a gridflow API key (expected {KEY_PREFIX}<id>_<secret>)")
    return m.group(1), m.group(2)


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def token_from(authorization: str | None, api_key_header: str | None) -> str:
    """The key from ``Authorization: Bearer …`` or ``X-Api-Key``, or 401."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthenticated("use 'Authorization: Bearer <API key>'")
        return value.strip()
    if api_key_header:
        return api_key_header
    raise unauthenticated("an API key is required: 'Authorization: Bearer <API key>'")


def check_scope_fields(role: str, grid: str | None, department: str | None) -> str | None:
    """What is wrong with a key's role and scope, or None."""
    if role not in ROLES:
        return f"role must be one of {', '.join(ROLES)}"
    if role == DEPARTMENT and not department:
        return "a department key needs its department"
    if role != DEPARTMENT and department:
        return "only a department key has a department"
    if role in (DEPARTMENT, ADMIN) and grid:
        return f"a {role} key has no grid scope"
    return None


# -- the rules ----------------------------------------------------------------------------
def allow(p: Principal, action: str) -> None:
    """The role check: 403 naming the roles that may."""
    what, roles = ACTIONS[action]
    if p.role not in roles:
        may = ", ".join(r for r in ROLES if r in roles)
        raise forbidden(f"a {p.role} key may not {what} ({action}: {may} only)")


def in_grid(p: Principal, path: Iterable[str], what: str) -> None:
    """``path``: the codes from the root down to the node ``what`` lies in."""
    if p.grid is None or p.role in (DEPARTMENT, ADMIN):
        return
    if p.grid not in set(path):
        raise forbidden(f"{what} is outside this key's grid {p.grid}")


def narrowed_grid(p: Principal, requested: str | None,
                  path_of: Callable[[str], Sequence[str]]) -> str | None:
    """The grid filter a scoped key may use: its own subtree when it asked for none, 403
    outside it. ``path_of``: a node code's codes from the root down (``GridRegistry``)."""
    if p.grid is None or p.role not in (PATROL_APP, OPERATOR):
        return requested
    if requested is None:
        return p.grid
    in_grid(p, path_of(requested), f"grid {requested}")
    return requested


def narrowed(p: Principal, query: Mapping[str, Any],
             path_of: Callable[[str], Sequence[str]]) -> dict[str, Any]:
    """``query`` with its ``grid`` narrowed (``narrowed_grid``); none when it has none."""
    grid = narrowed_grid(p, query.get("grid"), path_of)
    return {**query, **({"grid": grid} if grid is not None else {})}


def for_department(p: Principal, department: str) -> None:
    if p.role == DEPARTMENT and p.department != department:
        raise forbidden(f"this key acts for department {p.department}, not {department}")


def on_case(p: Principal, path: Sequence[str], departments: Iterable[str], case_id: str) -> None:
    """May ``p`` see this case: in its grid, or (a department) holding an assignment on it."""
    if p.role == DEPARTMENT:
        if p.department not in set(departments):
            raise forbidden(f"case {case_id} has no assignment for department {p.department}")
        return
    in_grid(p, path, f"case {case_id}")


def speaks_for(p: Principal, node_path: Sequence[str], node_code: str) -> None:
    """An operator speaks for a node of its own subtree (its own node's tier or below).

    ``node_path``: the codes from the root to the node the request speaks for.
    """
    if p.role != OPERATOR or p.grid is None:
        return
    if p.grid not in set(node_path):
        raise forbidden(f"this key speaks for grid {p.grid} and below, not for {node_code}")


# -- rate limits --------------------------------------------------------------------------
@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per key: ``per_minute`` requests, in bursts of up to that many.

    Each process keeps its own buckets: N instances of a service allow N times the rate.
    """

    clock: object = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key_id: str, per_minute: int) -> None:
        if per_minute <= 0:
            return  # unlimited
        now = self.clock()  # type: ignore[operator]
        b = self._buckets.get(key_id)
        if b is None:
            b = self._buckets[key_id] = _Bucket(float(per_minute), now)
        b.tokens = min(float(per_minute), b.tokens + (now - b.at) * per_minute / 60.0)
        b.at = now
        if b.tokens < 1.0:
            wait = (1.0 - b.tokens) * 60.0 / per_minute
            raise AccessDenied(429, f"rate limit: {per_minute} requests a minute for this key; "
                                    f"retry in {wait:.1f} s", retry_after=wait)
        b.tokens -= 1.0
