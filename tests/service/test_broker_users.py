"""Broker users on the real RabbitMQ, in a throwaway vhost (the users are deleted after):
a department reads its own queue and answers as itself, and nothing else; a service user is
no administrator; provisioning is idempotent and rotates; the services run under their own
users, started by hand and by ``gridflow up``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu
import pika
import pika.exceptions
import pytest
import requests
from nameko.testing.utils import find_free_port

from gridflow import SERVICES
from gridflow.broker_users import (
    Credentials,
    ProvisionError,
    amqp_uri_for,
    load_secrets,
    provision,
)
from shared.amqp import topology
from shared.reference import load_reference
from support import (
    RABBIT_API,
    delete_broker_users,
    get_messages,
    stop_and_read,
    stop_processes,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
GUEST = ("guest", "guest")
ADMIN = "http://guest:guest@127.0.0.1:15672"
DEPARTMENTS = ("fire", "police")


def api(path: str, auth: tuple[str, str] = GUEST, method: str = "GET", **kw: Any) -> Any:
    return requests.request(method, f"{RABBIT_API}/api/{path}", auth=auth, timeout=10, **kw)


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


@pytest.fixture
def vhost(rabbit_config: dict[str, Any]) -> Iterator[str]:
    """The test's fresh vhost (nameko_test_…); every user provisioned in it is deleted."""
    name = rabbit_config["vhost"]
    yield name
    delete_broker_users(name)


@pytest.fixture
def secrets_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "secrets" / "broker-users.json"


@pytest.fixture
def users(vhost: str, rabbit_config: dict[str, Any], secrets_path: Path) -> Credentials:
    """The topology declared (as the services would) and the users provisioned."""
    with kombu.Connection(rabbit_config["AMQP_URI"]) as conn:
        topology.declare(conn.channel(), DEPARTMENTS)
    return provision(ADMIN, vhost, DEPARTMENTS, SERVICES, secrets_path)


def channel_of(uri: str) -> tuple[pika.BlockingConnection, Any]:
    conn = pika.BlockingConnection(pika.URLParameters(uri))
    return conn, conn.channel()


def refused(uri: str, action: Callable[[Any], Any]) -> str:
    """Run ``action`` on a fresh channel of ``uri``: the broker must close it with 403."""
    conn, ch = channel_of(uri)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            action(ch)
    finally:
        if conn.is_open:
            conn.close()
    assert info.value.reply_code == 403, info.value
    assert "ACCESS_REFUSED" in info.value.reply_text
    return info.value.reply_text


def publish(ch: Any, exchange: str, key: str, body: bytes = b"{}") -> None:
    ch.confirm_delivery()
    ch.basic_publish(exchange, key, body, pika.BasicProperties(
        content_type="application/json", delivery_mode=2, message_id=f"m-{time.time_ns()}"),
        mandatory=True)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gridflow.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), **(env or {})})


# -- departments ---------------------------------------------------------------------------------
def test_a_department_consumes_its_own_queue(users: Credentials, amqp_uri_pika: str) -> None:
    conn, ch = channel_of(users.service_uri(amqp_uri_pika, "notify"))
    publish(ch, topology.DISPATCH_EXCHANGE, "fire.case.assigned",
            json.dumps({"type": "case.assigned", "case_id": "20261124-000001"}).encode())
    conn.close()
    fire = users.department_uri(amqp_uri_pika, "fire")
    out = cli("subscribe", "--department", "fire", "--amqp-uri", fire, "--max-messages", "1",
              "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "20261124-000001" in out.stdout and "1 received, 1 handled" in out.stdout


def test_a_department_cannot_read_another_department_s_queue(
        users: Credentials, amqp_uri_pika: str) -> None:
    fire = users.department_uri(amqp_uri_pika, "fire")
    text = refused(fire, lambda ch: ch.basic_consume("dispatch.police", lambda *a: None))
    assert "queue 'dispatch.police'" in text
    refused(fire, lambda ch: ch.basic_get("dispatch.police"))
    refused(fire, lambda ch: ch.basic_get("dispatch.fire.dlq"))


def test_a_department_answers_as_itself(users: Credentials, amqp_uri_pika: str) -> None:
    fire = users.department_uri(amqp_uri_pika, "fire")
    out = cli("respond", "ack", "20261124-000001", "--department", "fire", "--amqp-uri", fire)
    assert out.returncode == 0, out.stdout + out.stderr  # confirmed and routed (mandatory)
    landed = get_messages(amqp_uri_pika, topology.RESPONSES_QUEUE)
    assert [m.delivery_info["routing_key"] for m in landed] == ["fire.ack"]


def test_a_department_cannot_answer_as_another(users: Credentials, amqp_uri_pika: str) -> None:
    fire = users.department_uri(amqp_uri_pika, "fire")
    text = refused(fire, lambda ch: publish(ch, topology.RESPONSES_EXCHANGE, "police.ack"))
    assert "topic 'police.ack'" in text
    refused(fire, lambda ch: publish(ch, topology.RESPONSES_EXCHANGE, "firex.ack"))
    out = cli("respond", "ack", "20261124-000001", "--department", "police", "--amqp-uri", fire)
    assert out.returncode != 0 and "ACCESS_REFUSED" in out.stdout + out.stderr
    assert get_messages(amqp_uri_pika, topology.RESPONSES_QUEUE) == []


@pytest.mark.parametrize("what, action", [
    ("publish on gridflow.dispatch",
     lambda ch: publish(ch, topology.DISPATCH_EXCHANGE, "fire.case.assigned")),
    ("publish on the default exchange", lambda ch: publish(ch, "", "dispatch.fire")),
    ("publish on gridflow.events",
     lambda ch: publish(ch, topology.EVENTS_EXCHANGE, "case.reported")),
    ("declare a queue", lambda ch: ch.queue_declare("mine")),
    ("declare a server-named queue", lambda ch: ch.queue_declare("", exclusive=True)),
    ("redeclare its own queue", lambda ch: ch.queue_declare(
        "dispatch.fire", durable=True,
        arguments=topology.work_queue_arguments("dispatch.fire"))),
    ("delete its own queue", lambda ch: ch.queue_delete("dispatch.fire")),
    ("declare an exchange", lambda ch: ch.exchange_declare("mine", "topic")),
    ("bind its queue", lambda ch: ch.queue_bind("dispatch.fire", topology.DISPATCH_EXCHANGE,
                                                "police.#")),
])
def test_a_department_may_do_nothing_else(users: Credentials, amqp_uri_pika: str, what: str,
                                          action: Callable[[Any], Any]) -> None:
    refused(users.department_uri(amqp_uri_pika, "fire"), action)


# -- services ------------------------------------------------------------------------------------
def test_no_service_user_administers_the_broker(users: Credentials, vhost: str) -> None:
    for g in users.grants:
        auth = (g.name, users.passwords[g.name])
        assert api("users", auth).status_code == 401, g.name
        assert api(f"permissions/{q(vhost)}/guest", auth).status_code == 401, g.name
        assert api("users/intruder", auth, "PUT",
                   json={"password": "x", "tags": "administrator"}).status_code == 401, g.name
        on_broker = api(f"users/{q(g.name)}").json()
        assert "administrator" not in on_broker["tags"]
        assert on_broker["tags"] == (["monitoring"] if g.subject == "monitor" else [])
    assert api("users/intruder").status_code == 404
    monitor = users.grant("service", "monitor")
    figures = api(f"queues/{q(vhost)}", (monitor.name, users.passwords[monitor.name]))
    assert figures.status_code == 200  # the monitor's queue page
    assert "dispatch.fire" in {row["name"] for row in figures.json()}


def test_only_notify_publishes_dispatches(users: Credentials, amqp_uri_pika: str) -> None:
    for service in ("intake", "routing", "escalation", "monitor"):
        refused(users.service_uri(amqp_uri_pika, service),
                lambda ch: publish(ch, topology.DISPATCH_EXCHANGE, "fire.case.assigned"))
        refused(users.service_uri(amqp_uri_pika, service),
                lambda ch: publish(ch, topology.RESPONSES_EXCHANGE, "fire.ack"))
    refused(users.service_uri(amqp_uri_pika, "routing"),
            lambda ch: publish(ch, topology.HEARTBEATS_EXCHANGE, "intake.vm:1:x"))
    refused(users.service_uri(amqp_uri_pika, "routing"),
            lambda ch: ch.basic_get("rpc-intake"))


# -- provisioning --------------------------------------------------------------------------------
def test_provisioning_again_keeps_the_passwords_and_resets_the_permissions(
        users: Credentials, vhost: str, secrets_path: Path) -> None:
    assert stat.S_IMODE(secrets_path.stat().st_mode) == 0o600
    assert len(users.created) == len(users.grants) == len(SERVICES) + len(DEPARTMENTS)
    fire = f"{vhost}.dept.fire"
    where = f"{q(vhost)}/{q(fire)}"
    api(f"permissions/{where}", method="PUT",
        json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    api(f"topic-permissions/{where}", method="PUT",
        json={"exchange": "gridflow.events", "write": ".*", "read": ".*"}).raise_for_status()
    api(f"users/{q(fire)}", method="PUT",
        json={"password": users.passwords[fire], "tags": "administrator"}).raise_for_status()

    again = provision(ADMIN, vhost, DEPARTMENTS, SERVICES, secrets_path)
    assert dict(again.passwords) == dict(users.passwords)
    assert again.created == again.rotated == ()
    perms = api(f"permissions/{where}").json()
    assert (perms["configure"], perms["write"], perms["read"]) == (
        "^$", r"^gridflow\.responses$", r"^dispatch\.fire$")
    assert [(t["exchange"], t["write"], t["read"]) for t in
            api(f"topic-permissions/{where}").json()] == [
        ("gridflow.responses", r"^fire\.", "^$")]
    assert api(f"users/{q(fire)}").json()["tags"] == []


def test_rotate_changes_every_password_and_the_old_ones_stop_working(
        users: Credentials, amqp_uri_pika: str, secrets_path: Path, vhost: str) -> None:
    out = cli("broker-users", "--rotate", "--show-passwords", "--secrets", str(secrets_path),
              env={"AMQP_URI": amqp_uri_pika, "GRIDFLOW_VAR_DIR": str(secrets_path.parent)})
    assert out.returncode == 0, out.stdout + out.stderr
    rotated = {name: v["password"] for name, v in load_secrets(secrets_path).items()}
    assert set(rotated) >= set(users.passwords)  # and the demo's other departments
    assert all(rotated[n] != users.passwords[n] for n in users.passwords)
    fire = f"{vhost}.dept.fire"
    assert rotated[fire] in out.stdout  # --show-passwords
    assert f"{len(users.passwords)} passwords rotated" in out.stdout
    with pytest.raises(pika.exceptions.AMQPConnectionError):  # ProbableAuthenticationError
        pika.BlockingConnection(pika.URLParameters(
            amqp_uri_for(amqp_uri_pika, fire, users.passwords[fire])))
    conn, ch = channel_of(amqp_uri_for(amqp_uri_pika, fire, rotated[fire]))
    assert ch.queue_declare("dispatch.fire", passive=True).method.message_count == 0
    conn.close()


def test_the_command_provisions_and_prints_who_may_do_what(
        vhost: str, amqp_uri_pika: str, tmp_path: Path) -> None:
    helped = cli("broker-users", "--help")
    assert helped.returncode == 0
    for option in ("--admin-url", "--vhost", "--secrets", "--rotate", "--show-passwords"):
        assert option in helped.stdout
    var = tmp_path / "var"
    out = cli("broker-users", env={"AMQP_URI": amqp_uri_pika, "GRIDFLOW_VAR_DIR": str(var)})
    assert out.returncode == 0, out.stdout + out.stderr
    secrets = load_secrets(var / "secrets" / "broker-users.json")
    departments = load_reference(ROOT / "deploy" / "demo").catalogue.departments
    assert set(secrets) == {f"{vhost}.gridflow-{s}" for s in SERVICES} | {
        f"{vhost}.dept.{d}" for d in departments}
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert "department" in rows[f"{vhost}.dept.fire"]
    assert "dispatch.fire" in rows[f"{vhost}.dept.fire"]
    assert "gridflow.responses fire.<action>" in rows[f"{vhost}.dept.fire"]
    assert "service" in rows[f"{vhost}.gridflow-intake"]
    assert all(v["password"] not in out.stdout for v in secrets.values())
    assert "mode 0600" in out.stdout


def test_clear_errors(vhost: str, users: Credentials, secrets_path: Path) -> None:
    def error(admin_url: str, on: str = vhost) -> str:
        with pytest.raises(ProvisionError) as info:
            provision(admin_url, on, DEPARTMENTS, SERVICES, secrets_path, timeout=3)
        return str(info.value)

    port = find_free_port()
    assert "unreachable" in error(f"http://guest:guest@127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in error(f"http://guest:guest@127.0.0.1:{port}")
    wrong = error("http://guest:wrong@127.0.0.1:15672")
    assert "401" in wrong and "wrong" not in wrong  # no password in the message
    monitor = f"{vhost}.gridflow-monitor"
    not_admin = error(f"http://{q(monitor)}:{users.passwords[monitor]}@127.0.0.1:15672")
    assert "may not manage users" in not_admin
    assert "no vhost" in error(ADMIN, on=f"{vhost}-missing")
    out = cli("broker-users", "--admin-url", f"http://guest:guest@127.0.0.1:{port}",
              "--secrets", str(secrets_path))
    assert out.returncode == 1 and "unreachable" in out.stderr and "Traceback" not in out.stderr


# -- the services under their own users ----------------------------------------------------------
def ports_env(var: Path) -> tuple[dict[str, str], dict[str, int]]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(SERVICES):
        ports = {s: find_free_port() for s in SERVICES}
    env = {"PATH": os.environ.get("PATH", ""), "GRIDFLOW_VAR_DIR": str(var),
           "GRIDFLOW_HEARTBEAT_S": "0.5",
           "GRIDFLOW_HTTP_ADDRESS": f"127.0.0.1:{ports['intake']}",
           **{f"GRIDFLOW_{s.upper()}_HTTP_ADDRESS": f"127.0.0.1:{p}"
              for s, p in ports.items() if s != "intake"}}
    return env, ports


def connected_users(vhost: str) -> set[str]:
    rows = api("connections?columns=user,vhost").json()
    return {c["user"] for c in rows if c["vhost"] == vhost}


def consumers(vhost: str) -> dict[str, int]:
    rows = api(f"queues/{q(vhost)}?columns=name,consumers").json()
    return {r["name"]: r.get("consumers", 0) for r in rows}


def test_the_five_services_run_under_their_own_users(
        vhost: str, amqp_uri_pika: str, tmp_path: Path) -> None:
    """From an empty vhost: each service declares the topology, consumes, serves and calls
    RPC, beats and (the monitor) reads the management API, as itself, and nothing is
    refused."""
    departments = load_reference(ROOT / "deploy" / "demo").catalogue.departments
    creds = provision(ADMIN, vhost, departments, SERVICES, tmp_path / "secrets.json")
    env, ports = ports_env(tmp_path / "var")
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {}
    for s in SERVICES:
        procs[s] = subprocess.Popen(
            [sys.executable, "-m", "gridflow.run_service", s], cwd=ROOT,
            env={**env, "AMQP_URI": creds.service_uri(amqp_uri_pika, s), "GRIDFLOW_SERVICE": s},
            stdout=(logs / f"{s}.log").open("wb"), stderr=subprocess.STDOUT)

    def log_text() -> str:
        return "\n".join(f"--- {s}\n{(logs / f'{s}.log').read_text()}" for s in SERVICES)

    try:
        want = {f"{vhost}.gridflow-{s}" for s in SERVICES}
        wait_for(lambda: connected_users(vhost) == want, timeout=60, interval=0.5,
                 what="a connection of every service, as itself and nobody else")
        rpc = ["rpc-intake", "rpc-escalation", "rpc-notify"]
        wait_for(lambda: all(consumers(vhost).get(n) for n in
                             [topology.RESPONSES_QUEUE, *rpc, "gridflow.routing",
                              "gridflow.escalation", "gridflow.notify", "gridflow.intake"]),
                 timeout=60, interval=0.5, what="every consumer")
        queues = consumers(vhost)
        for spec in topology.queues(departments):
            assert spec.name in queues, spec.name
        assert any(n.startswith("rpc.reply-monitor-") for n in queues)
        assert any(n.startswith("rpc.reply-intake-") for n in queues)
        monitor = requests.Session()
        base = f"http://127.0.0.1:{ports['monitor']}"
        wait_for(lambda: monitor.post(f"{base}/api/login", timeout=5, json={
            "name": "operator", "password": "gridflow"}).status_code == 200,
            timeout=30, what="the monitor's login")
        got = monitor.get(f"{base}/api/queues", timeout=10).json()
        assert got["source"] == "management API"  # as a monitoring user
        assert monitor.get(f"{base}/api/funnel", timeout=15).status_code == 200  # → intake
        assert monitor.get(f"{base}/api/ledger", timeout=15).status_code == 200  # → escalation

        def beating() -> bool:
            rows = monitor.get(f"{base}/api/services", timeout=10).json()["instances"]
            return {r["service"] for r in rows} >= set(SERVICES)

        wait_for(beating, timeout=30, interval=0.5, what="a heartbeat of every service")
        assert all(p.poll() is None for p in procs.values()), log_text()
    finally:
        stop_processes(procs.values())
    text = log_text()
    assert "ACCESS_REFUSED" not in text and "refused for user" not in text, text
    assert "management API unavailable" not in text, text
    assert {p.returncode for p in procs.values()} <= {0, -15}, text


def test_up_starts_each_service_as_its_own_user(
        vhost: str, amqp_uri_pika: str, tmp_path: Path) -> None:
    env, _ = ports_env(tmp_path / "var")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridflow.cli", "up", "--services", "routing", "notify",
         "--speed", "1", "--no-simulator"],
        cwd=ROOT, env={**env, "AMQP_URI": amqp_uri_pika},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        want = {f"{vhost}.gridflow-routing", f"{vhost}.gridflow-notify"}
        wait_for(lambda: connected_users(vhost) == want, timeout=60, interval=0.5,
                 what="routing and notify connected as themselves (not guest)")
    finally:
        out = stop_and_read(proc)
    assert proc.returncode == 0, out
    secrets = tmp_path / "var" / "secrets" / "broker-users.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert f"passwords in {secrets}" in out
    assert (f"gridflow subscribe --department fire --amqp-uri "
            f"amqp://{vhost}.dept.fire:PASSWORD@") in out
    assert all(v["password"] not in out for v in load_secrets(secrets).values())
    assert "all services stopped" in out and "Traceback" not in out


def test_up_keeps_an_external_broker_s_uri_when_it_cannot_provision(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from gridflow.supervisor import broker_users_for

    monkeypatch.setenv("GRIDFLOW_RABBIT_ADMIN_URL", f"http://guest:guest@127.0.0.1:{find_free_port()}")
    said: list[str] = []
    remote = SimpleNamespace(amqp_uri="amqp://u:p@broker.example:5672/", var_dir=tmp_path)
    assert broker_users_for(remote, list(DEPARTMENTS), said.append) is None
    assert "unreachable" in said[0] and "AMQP_URI as given" in said[1]
    local = SimpleNamespace(amqp_uri="amqp://guest:guest@127.0.0.1:5672/", var_dir=tmp_path)
    with pytest.raises(ProvisionError, match="unreachable"):
        broker_users_for(local, list(DEPARTMENTS), said.append)
