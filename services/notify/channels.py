"""The reporter channels' adapters: a webhook POST over HTTP, and an SMS gateway.

``SmsGateway`` is the seam to a real SMS provider: a class with ``send(phone, text)``
that raises on failure (``PermanentFailure`` for a number that will never work). Which
class is used is a setting, ``GRIDFLOW_SMS_GATEWAY``: ``log`` (the default) logs each
text with the phone masked; otherwise ``package.module:Class``, instantiated with no
arguments (a provider's credentials come from its own environment).

Every webhook POST is signed (``X-Gridflow-Signature``, see ``shared/signing.py``) with all
the secrets notify holds: ``GRIDFLOW_WEBHOOK_SECRETS`` (comma-separated; sign with old and
new while receivers rotate), else a secret generated once into
``<GRIDFLOW_VAR_DIR>/secrets/webhook.key`` (mode 0600), so the demo always signs.
"""

from __future__ import annotations

import base64
import http.client
import importlib
import json
import logging
import secrets as _random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from shared.privacy import mask_phone, mask_text
from shared.private_files import read_or_create, readable_by_others
from shared.signing import DELIVERY_HEADER, SIGNATURE_HEADER, signed_headers

from .feedback import SENT_OK, Outcome, http_outcome

log = logging.getLogger(__name__)

USER_AGENT = "gridflow-notify/1"
WEBHOOK_KEY_FILE = Path("secrets") / "webhook.key"  # under the var dir


class PermanentFailure(Exception):
    """A send that will never succeed (an invalid number, a refused recipient)."""


@runtime_checkable
class SmsGateway(Protocol):
    def send(self, phone: str, text: str) -> None:
        """Send ``text`` to ``phone``; raise on failure."""


class LoggingSmsGateway:
    """Ships no SMS: logs each text with the phone masked (a deployment without a
    provider, the demo, development)."""

    def send(self, phone: str, text: str) -> None:
        log.info("sms (not sent: logging gateway)", extra={"to": mask_phone(phone),
                                                           "text": mask_text(text)})


def load_sms_gateway(spec: str | None) -> SmsGateway:
    """``log`` (or nothing) → LoggingSmsGateway; ``module:Class`` → that class()."""
    if not spec or spec == "log":
        return LoggingSmsGateway()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"GRIDFLOW_SMS_GATEWAY={spec!r}: use 'log' or 'package.module:Class'")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    gateway = target() if isinstance(target, type) else target
    if not isinstance(gateway, SmsGateway):
        raise TypeError(f"GRIDFLOW_SMS_GATEWAY={spec!r} has no send(phone, text)")
    return gateway


def send_sms(gateway: SmsGateway, phone: str, text: str) -> Outcome:
    try:
        gateway.send(phone, text)
    except PermanentFailure as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}", permanent=True)
    except Exception as exc:  # any gateway failure is retried
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    return SENT_OK


class WebhookClient:
    """POSTs a JSON body (stdlib ``http.client``, green under eventlet); the outcome follows
    ``feedback.http_outcome``. Redirects are not followed (a POST must not silently turn
    into a GET): a 3xx is retried, and its error says so."""

    def __init__(self, timeout_s: float = 10.0, secrets: Iterable[bytes | str] = (),
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.timeout_s = timeout_s
        self.secrets = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets]
        # the signature's time is the wall clock the receiver checks it against, never a
        # demo clock
        self.wall_clock = wall_clock

    def post(self, url: str, body: Mapping[str, Any]) -> Outcome:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return Outcome(False, "not an http(s) URL", permanent=True)
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            DELIVERY_HEADER: str(body.get("delivery_id", "")),
        }
        if self.secrets:  # each attempt signed afresh: a retry hours later is still fresh
            headers.update(signed_headers(self.secrets, data, self.wall_clock()))
        if parts.username:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=self.timeout_s)
        try:
            conn.request("POST", path, body=data, headers=headers)
            response = conn.getresponse()
            response.read(65536)
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(False, f"{type(exc).__name__}: {_no_url(str(exc), url)}")
        finally:
            conn.close()
        return http_outcome(response.status, response.reason or "")


def webhook_secrets(configured: str | Iterable[str] | None,
                    var_dir: Path) -> tuple[list[bytes], str]:
    """The secrets that sign webhooks, and where they come from (for the log, never the
    secrets): ``configured`` (``GRIDFLOW_WEBHOOK_SECRETS``: comma-separated, or a list),
    else the key file under ``var_dir``, created on first use."""
    if isinstance(configured, str):
        configured = configured.split(",")
    given = [s.strip() for s in configured or () if s and s.strip()]
    if given:
        keys, source = [s.encode() for s in given], "GRIDFLOW_WEBHOOK_SECRETS"
    else:
        path = Path(var_dir) / WEBHOOK_KEY_FILE
        keys, source = [_key_file(path)], str(path)
    log.info("webhooks are signed", extra={"header": SIGNATURE_HEADER, "secrets_from": source,
                                           "secrets": len(keys)})
    return keys, source


def _key_file(path: Path) -> bytes:
    """The secret kept in ``path``, made once (``shared.private_files.read_or_create``)."""
    existed = path.exists()
    key = read_or_create(path, lambda: _random.token_hex(32)).encode()
    if not existed:
        log.info("webhook signing secret created", extra={"path": str(path)})
    if readable_by_others(path):
        log.warning("webhook secret file readable by others; set it to 0600",
                    extra={"path": str(path)})
    if not key:
        raise ValueError(f"{path} is empty: delete it to make a new webhook secret")
    return key


def _no_url(text: str, url: str) -> str:
    """An error that names the URL (or its path) must not leak a token it may carry."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    for secret in (url, path if len(path) > 1 else ""):
        if secret:
            text = text.replace(secret, "<webhook>")
    return text
