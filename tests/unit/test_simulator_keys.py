"""The simulator's API keys: which key each action carries, what is missing, and a key
intake refuses (401, 403) stopping the run at once instead of being tried again."""

from __future__ import annotations

import http.server
import json
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from gridflow import simulator
from gridflow.simulation.actors import AccessRefused, Http, Keys
from gridflow.simulation.plan import Action


@pytest.fixture(autouse=True)
def _signals() -> Iterator[None]:
    """``simulator.main`` takes SIGTERM and SIGINT: give them back to pytest."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_each_role_has_its_key_and_the_admin_key_covers_the_rest() -> None:
    keys = Keys(admin="A", patrol="P", departments={"fire": "F"})
    assert keys.for_action(Action("report"))[1] == "P"
    assert keys.for_action(Action("rate", "c"))[1] == "P"
    assert keys.for_action(Action("ack", "c", "fire"))[1] == "F"
    assert keys.for_action(Action("ack", "c", "police"))[1] == "A"
    assert keys.for_action(Action("whistle", "c"))[1] == "A"
    assert keys.for_reads()[1] == "A"
    assert keys.missing(["fire", "police"]) == []


def test_without_an_admin_key_every_role_needs_its_own() -> None:
    keys = Keys(patrol="P", departments={"fire": "F"})
    missing = keys.missing(["fire", "police", "gas"])
    assert any("--operator-key" in m for m in missing)
    assert any("police, gas" in m or "gas, police" in m for m in missing)
    assert not any("--patrol-key" in m for m in missing)
    assert keys.for_reads() == ("--patrol-key", "P")
    assert not Keys().any


def test_department_keys_from_the_command_line() -> None:
    args = simulator.parser().parse_args(
        ["--api-key", "A", "--department-key", "fire=F1", "--department-key", "gas = G"])
    keys = simulator.keys_of(args)
    assert keys.admin == "A" and dict(keys.departments) == {"fire": "F1", "gas": "G"}
    with pytest.raises(ValueError, match="DEPT=KEY"):
        simulator.keys_of(simulator.parser().parse_args(["--department-key", "fire"]))


def test_the_admin_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDFLOW_API_KEY", "from-env")
    assert simulator.parser().parse_args([]).api_key == "from-env"
    assert "admin" in simulator.parser().format_help()


def test_no_key_at_all_is_an_error_before_anything_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    assert simulator.main(simulator.parser().parse_args(["--intake", "http://127.0.0.1:9"])) == 2
    assert "no API key" in caplog.text and "admin" in caplog.text


class _Refusing(http.server.BaseHTTPRequestHandler):
    status = 401
    seen: list[dict[str, str]] = []

    def _answer(self) -> None:
        _Refusing.seen.append(dict(self.headers))
        body = json.dumps({"errors": {"_auth": ["unknown API key, or a wrong secret"]}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[str]:
    _Refusing.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_the_run_with_intakes_reason(refusing: str, status: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Refusing, "status", status)
    stop = threading.Event()
    http = Http(refusing, stop, Keys(admin="gfk_x"), delays=(0.01,) * 5)
    out = http.act(Action("report", body={"report_id": "r-1"}))
    assert out.status == status and stop.is_set()
    assert len(_Refusing.seen) == 1  # not tried again
    assert _Refusing.seen[0]["Authorization"] == "Bearer gfk_x"
    assert http.refused is not None and "unknown API key" in http.refused.message()
    assert "POST /api/v1/reports" in http.refused.message()
    with pytest.raises(AccessRefused, match="admin"):
        http.get("/api/v1/categories")


def test_the_simulator_exits_when_intake_refuses_its_key(
        refusing: str, caplog: pytest.LogCaptureFixture) -> None:
    args = simulator.parser().parse_args(["--intake", refusing, "--api-key", "gfk_bad"])
    assert simulator.main(args) == 3
    assert "unknown API key" in caplog.text and "--api-key" in caplog.text
