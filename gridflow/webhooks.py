"""Verify a webhook from gridflow, in the receiving app (needs no nameko, no broker).

gridflow signs each POST it makes to your system — reporter feedback (反馈) from notify,
and the dispatch messages ``gridflow subscribe --forward URL --secret …`` passes on — with
``X-Gridflow-Signature: t=<unix time>,v1=<hex>[,v1=<hex>…]``: HMAC-SHA256 under the shared
secret of ``f"{t}.".encode() + body`` (see ``shared/signing.py``). Verify the *raw* body
before parsing it, and answer ``401`` when it fails::

    from flask import Flask, abort, request
    from gridflow.webhooks import WebhookSignatureError, verify_request

    app, seen = Flask(__name__), set()   # seen: delivery ids, kept for the window at least

    @app.post("/gridflow/feedback")
    def feedback():
        try:
            body = verify_request(SECRET, request.headers, request.get_data())
        except WebhookSignatureError as exc:
            abort(401, exc.reason)
        if body["delivery_id"] not in seen:       # a retry, or a replay inside the window
            seen.add(body["delivery_id"]); handle(body)
        return "", 204

Pass several secrets (``[new, old]``) while rotating: any of them may match. A request
signed more than ``tolerance_s`` (300 s) before or after your clock is refused, so a
captured request cannot be replayed later; inside the window dedupe on ``delivery_id``
(the ``X-Gridflow-Delivery`` header; a forwarded dispatch: ``X-Gridflow-Message-Id``),
which is what you do for gridflow's retries anyway. Keep your clock in sync (NTP).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from shared.signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TOLERANCE_S,
    Secret,
    SignatureError,
    verify,
)

__all__ = ["DELIVERY_HEADER", "SIGNATURE_HEADER", "WebhookSignatureError", "header",
           "verify_request"]


class WebhookSignatureError(SignatureError):
    """The request is not a genuine, fresh gridflow webhook; ``reason`` says why."""


def header(headers: Mapping[str, Any] | Any, name: str) -> str | None:
    """``name`` from a request's headers, whatever they are: werkzeug's ``Headers``,
    ``http.server``'s message, a plain dict (any case), or a WSGI environ."""
    getter = getattr(headers, "get", None)
    if getter is not None:
        value = getter(name)
        if value is not None:
            return str(value)
    wanted = name.lower()
    environ_key = "HTTP_" + name.upper().replace("-", "_")
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        if str(key).lower() == wanted or key == environ_key:
            return str(value)
    return None


def verify_request(secret_or_secrets: Secret | Iterable[Secret], headers: Mapping[str, Any],
                   body: bytes, *, tolerance_s: float = TOLERANCE_S,
                   now: float | None = None) -> Any:
    """The request's JSON body, once its ``X-Gridflow-Signature`` holds for ``body`` (the raw
    bytes) under one of the secrets and was made within ``tolerance_s`` of ``now`` (default:
    this machine's clock). Raises WebhookSignatureError otherwise."""
    try:
        verify(secret_or_secrets, header(headers, SIGNATURE_HEADER), body, now=now,
               tolerance_s=tolerance_s)
    except WebhookSignatureError:
        raise
    except SignatureError as exc:
        raise WebhookSignatureError(exc.reason) from None
    try:
        return json.loads(body)
    except ValueError:
        raise WebhookSignatureError("the signed body is not JSON") from None
