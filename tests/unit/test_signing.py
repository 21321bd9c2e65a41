"""Signed webhooks: the signature, the header, verification (window, rotation, malformed
headers), the receiving app's helper, notify's secrets and the department client's signed
forwards."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
import threading
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gridflow.department_client import DepartmentClient, forward_secrets
from gridflow.webhooks import WebhookSignatureError, verify_request
from services.notify.channels import WebhookClient, webhook_secrets
from shared.signing import (
    SIGNATURE_HEADER,
    SignatureError,
    parse_header,
    sign,
    signature_header,
    signed_headers,
    verify,
)

SECRET = "whsec-one"
OTHER = b"whsec-two"
T = 1_764_000_000
BODY = json.dumps({"delivery_id": "d-1", "type": "case.closed", "status_notes": "已办结"},
                  ensure_ascii=False).encode()


def header(secrets: Any = SECRET, t: int = T, body: bytes = BODY) -> str:
    return signature_header(secrets, t, body)


# -- the signature and the header -----------------------------------------------------------------


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, T, BODY) == sign(SECRET.encode(), T, BODY) == expected
    assert header() == f"t={T},v1={expected}"


def test_several_secrets_give_one_v1_each_in_order():
    assert header([SECRET, OTHER]) == (
        f"t={T},v1={sign(SECRET, T, BODY)},v1={sign(OTHER, T, BODY)}")
    assert parse_header(header([SECRET, OTHER])) == (
        T, [sign(SECRET, T, BODY), sign(OTHER, T, BODY)])


def test_no_secret_is_a_configuration_error_not_a_bad_request():
    with pytest.raises(ValueError, match="no webhook secret"):
        signature_header([], T, BODY)
    with pytest.raises(ValueError, match="empty"):
        sign("", T, BODY)


# -- verification -------------------------------------------------------------------------------


def test_a_good_signature_verifies_and_returns_its_time():
    assert verify(SECRET, header(), BODY, now=T + 5) == T
    assert verify([SECRET], header(), BODY, now=T) == T


def test_a_tampered_body_fails():
    tampered = BODY.replace("已办结".encode(), "未办结".encode())
    with pytest.raises(SignatureError, match="no signature matches") as exc:
        verify(SECRET, header(), tampered, now=T)
    assert "body was changed" in exc.value.reason


def test_a_wrong_secret_fails():
    with pytest.raises(SignatureError, match="no signature matches"):
        verify("not-the-secret", header(), BODY, now=T)


def test_rotation_any_secret_of_either_side_may_match():
    both = header([SECRET, OTHER])  # the sender signs with old and new
    assert verify(SECRET, both, BODY, now=T) == T  # a receiver still on the old one
    assert verify(OTHER, both, BODY, now=T) == T  # one that switched
    assert verify([OTHER, SECRET], header(SECRET), BODY, now=T) == T  # receiver holds both
    with pytest.raises(SignatureError):
        verify("third", both, BODY, now=T)


def test_the_replay_window():
    assert verify(SECRET, header(), BODY, now=T + 300) == T  # the edge is inside
    assert verify(SECRET, header(), BODY, now=T - 300) == T
    with pytest.raises(SignatureError, match="too old: signed 301 s ago"):
        verify(SECRET, header(), BODY, now=T + 301)
    with pytest.raises(SignatureError, match="in the future: 301 s ahead"):
        verify(SECRET, header(), BODY, now=T - 301)
    assert verify(SECRET, header(), BODY, now=T + 3000, tolerance_s=3600) == T


def test_the_window_is_checked_before_the_signature():
    """An old request is refused as old, whatever its signature says (a captured request
    replayed later)."""
    with pytest.raises(SignatureError, match="too old"):
        verify(SECRET, header("wrong"), BODY, now=T + 10_000)


@pytest.mark.parametrize(("value", "reason"), [
    (None, "missing X-Gridflow-Signature"),
    ("", "missing"),
    ("   ", "missing"),
    ("garbage", "malformed"),
    ("t=,v1=abc", "malformed"),
    (f"v1={sign(SECRET, T, BODY)}", "no timestamp"),
    (f"t=soon,v1={sign(SECRET, T, BODY)}", "t is not a Unix time"),
    (f"t=-5,v1={sign(SECRET, T, BODY)}", "t is not a Unix time"),
    (f"t={T},t={T},v1={sign(SECRET, T, BODY)}", "t given twice"),
    (f"t={T}", "no v1 signature"),
    (f"t={T},v0={sign(SECRET, T, BODY)}", "no v1 signature"),
    (f"t={T},v1=" + "0" * 5000, "too long"),
    (f"t={T},,v1={sign(SECRET, T, BODY)}", "malformed"),
])
def test_malformed_headers_say_what_is_wrong(value, reason):
    with pytest.raises(SignatureError, match=reason) as exc:
        verify(SECRET, value, BODY, now=T)
    assert SECRET not in str(exc.value) and sign(SECRET, T, BODY) not in str(exc.value)


def test_spaces_unknown_schemes_and_upper_case_hex_are_tolerated():
    sig = sign(SECRET, T, BODY)
    assert verify(SECRET, f" t={T} , v2=future , v1={sig.upper()} ", BODY, now=T) == T


def test_a_wrong_signature_among_good_ones_does_not_matter():
    assert verify(SECRET, f"t={T},v1={'ab' * 32},v1={sign(SECRET, T, BODY)}", BODY,
                  now=T) == T


# -- the receiving app's helper -------------------------------------------------------------------


def test_the_helper_returns_the_json_body():
    headers = {SIGNATURE_HEADER: header(), "X-Gridflow-Delivery": "d-1"}
    assert verify_request(SECRET, headers, BODY, now=T) == json.loads(BODY)


@pytest.mark.parametrize("headers", [
    {"x-gridflow-signature": None},  # a dict with lower-case names (ASGI style)
    {"HTTP_X_GRIDFLOW_SIGNATURE": None},  # a WSGI environ
    "message",  # http.server's headers
])
def test_the_helper_reads_headers_of_any_kind(headers):
    if headers == "message":
        headers = Message()
        headers["X-GRIDFLOW-SIGNATURE"] = header()
    else:
        headers = {k: header() for k in headers}
    assert verify_request([OTHER, SECRET], headers, BODY, now=T)["delivery_id"] == "d-1"


def test_the_helper_refuses_with_its_own_error_and_the_reason():
    with pytest.raises(WebhookSignatureError, match="missing"):
        verify_request(SECRET, {}, BODY, now=T)
    with pytest.raises(WebhookSignatureError, match="too old") as exc:
        verify_request(SECRET, {SIGNATURE_HEADER: header()}, BODY, now=T + 301)
    assert isinstance(exc.value, SignatureError) and isinstance(exc.value, ValueError)
    with pytest.raises(WebhookSignatureError, match="not JSON"):
        verify_request(SECRET, {SIGNATURE_HEADER: header(body=b"<xml/>")}, b"<xml/>", now=T)


def test_the_helper_uses_this_machines_clock_by_default():
    body = b'{"delivery_id": "now"}'
    assert verify_request(SECRET, signed_headers(SECRET, body), body) == {"delivery_id": "now"}


# -- notify's secrets -----------------------------------------------------------------------------


def test_configured_secrets_are_used_all_of_them(tmp_path: Path):
    keys, source = webhook_secrets(" new , old,", tmp_path)
    assert (keys, source) == ([b"new", b"old"], "GRIDFLOW_WEBHOOK_SECRETS")
    assert webhook_secrets(["a", "b"], tmp_path)[0] == [b"a", b"b"]
    assert not (tmp_path / "secrets").exists()


def test_without_configuration_a_key_file_is_made_once_and_kept_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level("INFO", logger="services.notify.channels"):
        keys, source = webhook_secrets(None, tmp_path)
    path = tmp_path / "secrets" / "webhook.key"
    assert source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys == [path.read_text().strip().encode()] and len(keys[0]) == 64
    assert webhook_secrets("", tmp_path)[0] == keys  # the same secret after a restart
    assert [p.name for p in path.parent.iterdir()] == ["webhook.key"]  # no temp file left
    started = [r for r in caplog.records if r.getMessage() == "webhooks are signed"]
    assert started[0].secrets_from == str(path)
    assert keys[0].decode() not in caplog.text


class _Receiver(BaseHTTPRequestHandler):
    got: list[tuple[Message, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.got.append((self.headers, body))
        try:
            verify_request([SECRET], self.headers, body)
            status = 204
        except WebhookSignatureError:
            status = 401
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.got = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_the_webhook_client_signs_each_post_with_the_wall_clock(receiver: str):
    client = WebhookClient(5, [SECRET, OTHER])
    assert client.post(receiver, {"delivery_id": "d-9", "note": "已办结"}).ok
    headers, body = _Receiver.got[0]
    assert headers["X-Gridflow-Delivery"] == "d-9" and json.loads(body)["note"] == "已办结"
    assert len(parse_header(headers[SIGNATURE_HEADER])[1]) == 2
    # signed at a wall-clock time long past: the receiver refuses it (401 is permanent)
    stale = WebhookClient(5, [SECRET], wall_clock=lambda: T)
    outcome = stale.post(receiver, {"delivery_id": "d-10"})
    assert (outcome.ok, outcome.error, outcome.permanent) == (False, "HTTP 401 Unauthorized",
                                                              True)


# -- the department client's forwards -------------------------------------------------------------


def test_the_department_client_signs_its_forwards(
    receiver: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("GRIDFLOW_FORWARD_SECRET", raising=False)
    assert forward_secrets(None) == []
    monkeypatch.setenv("GRIDFLOW_FORWARD_SECRET", f"{SECRET}, old")
    assert forward_secrets(None) == [SECRET, "old"]
    assert forward_secrets("given") == ["given"]

    props = SimpleNamespace(message_id="m-1", type="case.assigned")
    signed = DepartmentClient("amqp://x", "fire", forward_url=receiver,
                              forward_secrets=forward_secrets(None))
    assert signed._forward(BODY, props) is True
    headers, body = _Receiver.got[0]
    assert body == BODY and headers["X-Gridflow-Message-Id"] == "m-1"
    assert verify_request(SECRET, headers, body) == json.loads(BODY)

    unsigned = DepartmentClient("amqp://x", "fire", forward_url=receiver)
    assert unsigned._forward(BODY, props) is False  # refused (401): rejected to the DLQ
    assert SIGNATURE_HEADER not in _Receiver.got[1][0]
