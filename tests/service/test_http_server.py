"""The services' web server: TCP_NODELAY on its socket. Without it eventlet's separate
writes of a response's headers and body met Nagle's algorithm and the client's delayed
ACK, and every answer over a few KB took 44 ms (tests/bench/api_gate.py measures it).
And no SO_REUSEPORT: a second process on a port in use fails instead of sharing it."""

from __future__ import annotations

import socket
from typing import Any

import eventlet
import pytest
from nameko.web.server import WebServer

from services.intake.service import IntakeService


def test_the_web_server_sends_without_waiting_for_acks(run_services: Any, api: Any) -> None:
    intake = run_services(IntakeService)["intake"]
    (server,) = [e for e in intake.subextensions if isinstance(e, WebServer)]
    assert server._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert api.get("/api/v1/categories").status_code == 200  # and it serves


def test_a_second_server_on_a_port_in_use_fails_instead_of_sharing_it(
    run_services: Any, api: Any
) -> None:
    intake = run_services(IntakeService)["intake"]
    (server,) = [e for e in intake.subextensions if isinstance(e, WebServer)]
    assert server._sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    with pytest.raises(OSError):  # eventlet's default (SO_REUSEPORT on both) would bind
        eventlet.listen(server._sock.getsockname(), reuse_port=True).close()
