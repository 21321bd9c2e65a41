"""Operators' passwords and sessions: scrypt hashes and HMAC-signed session tokens.

A session is an operator signed in with a password (``GRIDFLOW_MONITOR_USERS``: the whole
district) or with an operator's or admin's API key (intake's ``authenticate`` over RPC):
then it carries the key's id, role and grid scope (``shared.access``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from shared.access import ADMIN, OPERATOR, Principal

SESSION_HOURS = 12
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    expected = hash_password(password, bytes.fromhex(salt)).split("$")[2]
    return hmac.compare_digest(expected, digest)


def _sign(secret: bytes, payload: str) -> str:
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def issue_token(secret: bytes, operator: str, now: float | None = None,
                hours: float = SESSION_HOURS) -> str:
    expires = int((now or time.time()) + hours * 3600)
    payload = f"{operator}|{expires}"
    return f"{base64.urlsafe_b64encode(payload.encode()).decode()}.{_sign(secret, payload)}"


def operator_of(secret: bytes, token: str | None, now: float | None = None) -> str | None:
    """The operator a token names, if its signature holds and it has not expired."""
    if not token or "." not in token:
        return None
    encoded, signature = token.rsplit(".", 1)
    try:
        payload = base64.urlsafe_b64decode(encoded.encode()).decode()
        operator, expires = payload.rsplit("|", 1)
        expiry = int(expires)
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(_sign(secret, payload), signature):
        return None
    return operator if expiry > (now or time.time()) else None


def parse_users(spec: str) -> dict[str, str]:
    """``name:password,name2:password2`` (GRIDFLOW_MONITOR_USERS) as a dict."""
    users = {}
    for item in spec.split(","):
        name, sep, password = item.strip().partition(":")
        if sep and name and password:
            users[name] = password
    return users


@dataclass(frozen=True)
class Session:
    name: str
    role: str = OPERATOR
    key_id: str | None = None
    grid: str | None = None  # a grid node's code; None: the whole district

    def encode(self) -> str:
        return json.dumps([self.name, self.role, self.key_id, self.grid], ensure_ascii=False)

    @classmethod
    def decode(cls, text: str) -> Session | None:
        try:
            name, role, key_id, grid = json.loads(text)
        except (ValueError, TypeError):
            return None
        if role not in (OPERATOR, ADMIN) or not isinstance(name, str):
            return None
        return cls(name, role, key_id, grid)

    @property
    def label(self) -> str:
        """Who, as the audit log names them."""
        return self.name if self.key_id is None else f"{self.name} [key {self.key_id}]"

    @property
    def principal(self) -> Principal:
        return Principal(self.key_id or "", self.name, self.role, self.grid)

    def as_dict(self) -> dict[str, str | None]:
        return {"operator": self.name, "role": self.role, "key_id": self.key_id,
                "grid": self.grid}


def session_of(secret: bytes, token: str | None, now: float | None = None) -> Session | None:
    encoded = operator_of(secret, token, now)
    return None if encoded is None else Session.decode(encoded)
