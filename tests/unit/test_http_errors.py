"""How the JSON HTTP entrypoint answers errors it did not expect a handler to raise."""

from __future__ import annotations

import json

import pytest
from amqp.exceptions import RecoverableConnectionError
from kombu.exceptions import OperationalError as KombuOperationalError

from shared.extensions.http import JsonHttpHandler


@pytest.mark.parametrize("exc", [
    KombuOperationalError("[Errno 111] Connection refused"),  # an RPC while RabbitMQ is away
    RecoverableConnectionError("connection already closed"),
    ConnectionResetError(104, "Connection reset by peer"),
])
def test_an_unreachable_broker_is_a_503_with_a_reason(exc: BaseException) -> None:
    response = JsonHttpHandler("GET", "/api/v1/supervision").response_from_exception(exc)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert json.loads(response.get_data()) == {
        "errors": {"_service": ["the message broker is unavailable; try again"]}}


def test_anything_else_is_a_500_with_a_reference_not_a_traceback() -> None:
    response = JsonHttpHandler("GET", "/x").response_from_exception(KeyError("secret"))
    assert response.status_code == 500
    body = json.loads(response.get_data())["errors"]["_service"][0]
    assert body.startswith("internal error (ref ") and "secret" not in body
