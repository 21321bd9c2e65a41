"""Operators' passwords and sessions: scrypt hashes and HMAC-signed session tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

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
