"""Signed webhooks: HMAC-SHA256 over the timestamp and the body, with a replay window.

Pure and stdlib only (a receiving app may copy this file). gridflow signs every HTTP POST it
makes to someone else's system — reporter feedback from notify, and the dispatch messages
``gridflow subscribe --forward`` passes on — with one header::

    X-Gridflow-Signature: t=1764000000,v1=5f0c…,v1=9a41…

``t`` is the Unix time of the attempt (a retry is signed afresh); each ``v1`` is the hex
HMAC-SHA256, under one shared secret, of ``f"{t}.".encode() + body`` — the raw body bytes as
received, before any JSON parsing. The sender signs with every secret it holds, so a
receiver may rotate its secret: the sender adds the new one, the receiver switches, the
sender drops the old one. A receiver accepts the request when any ``v1`` matches any of its
secrets and ``t`` lies within ``tolerance_s`` (300 s) of its own clock; inside that window a
replay is caught by deduping on the delivery id (``X-Gridflow-Delivery``, or the message id).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "X-Gridflow-Signature"
DELIVERY_HEADER = "X-Gridflow-Delivery"
SCHEME = "v1"
TOLERANCE_S = 300
MAX_HEADER_LEN = 4096

Secret = bytes | str


class SignatureError(ValueError):
    """A request whose signature does not hold; ``reason`` says why (safe to log: it never
    carries a secret or an expected signature)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _key(secret: Secret) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("an empty webhook secret")
    return key


def _keys(secrets: Secret | Iterable[Secret]) -> list[bytes]:
    if isinstance(secrets, str | bytes | bytearray):
        secrets = [secrets]
    keys = [_key(s) for s in secrets]
    if not keys:
        raise ValueError("no webhook secret given")
    return keys


def _body(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def sign(secret: Secret, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.".encode() + body`` under ``secret``."""
    message = f"{int(timestamp)}.".encode() + _body(body)
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Secret | Iterable[Secret], timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex>[,v1=<hex>…]``: one signature per secret, in the order given."""
    t = int(timestamp)
    return ",".join([f"t={t}", *(f"{SCHEME}={sign(k, t, body)}" for k in _keys(secrets))])


def signed_headers(secrets: Secret | Iterable[Secret], body: bytes,
                   now: float | None = None) -> dict[str, str]:
    """The header to add to a POST of ``body``, signed now."""
    t = int(time.time() if now is None else now)
    return {SIGNATURE_HEADER: signature_header(secrets, t, body)}


def parse_header(header: str | None) -> tuple[int, list[str]]:
    """``(t, [v1 signatures])``; SignatureError when missing or malformed. Unknown schemes
    (a later ``v2``) are skipped."""
    if header is None or not str(header).strip():
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    header = str(header)
    if len(header) > MAX_HEADER_LEN:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header: expected "
                                 "t=<unix time>,v1=<hex>")
        if name == "t":
            if timestamp is not None:
                raise SignatureError(f"malformed {SIGNATURE_HEADER} header: t given twice")
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise SignatureError(f"malformed {SIGNATURE_HEADER} header: t is not a "
                                     "Unix time")
            timestamp = int(value)
        elif name == SCHEME:
            signatures.append(value.lower())
    if timestamp is None:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: no timestamp t=")
    if not signatures:
        raise SignatureError(f"no {SCHEME} signature in {SIGNATURE_HEADER}")
    return timestamp, signatures


def verify(secrets: Secret | Iterable[Secret], header: str | None, body: bytes, *,
           now: float | None = None, tolerance_s: float = TOLERANCE_S) -> int:
    """Check ``header`` against ``body`` and the receiver's ``secrets`` (any may match);
    returns the signed timestamp. Raises SignatureError: missing or malformed header, no
    ``v1``, a timestamp more than ``tolerance_s`` old or ahead of ``now``, no match."""
    keys = _keys(secrets)
    timestamp, given = parse_header(header)
    current = time.time() if now is None else now
    age = current - timestamp
    if age > tolerance_s:
        raise SignatureError(f"timestamp too old: signed {age:.0f} s ago, the window is "
                             f"{tolerance_s:g} s (a replay?)")
    if -age > tolerance_s:
        raise SignatureError(f"timestamp in the future: {-age:.0f} s ahead, the window is "
                             f"{tolerance_s:g} s (check the clocks)")
    matched = False
    for key in keys:
        expected = sign(key, timestamp, body)
        for signature in given:  # every pair compared, in constant time
            matched |= hmac.compare_digest(expected.encode(), signature.encode())
    if not matched:
        raise SignatureError("no signature matches (wrong secret, or the body was changed)")
    return timestamp
