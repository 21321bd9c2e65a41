"""The services' web server: TCP_NODELAY on its socket. Without it eventlet's separate
writes of a response's headers and body met Nagle's algorithm and the client's delayed
ACK, and every answer over a few KB took 44 ms (tests/bench/api_gate.py measures it)."""

from __future__ import annotations

import socket
from typing import Any

from nameko.web.server import WebServer

from services.intake.service import IntakeService


def test_the_web_server_sends_without_waiting_for_acks(run_services: Any, api: Any) -> None:
    intake = run_services(IntakeService)["intake"]
    (server,) = [e for e in intake.subextensions if isinstance(e, WebServer)]
    assert server._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert api.get("/api/v1/categories").status_code == 200  # and it serves
