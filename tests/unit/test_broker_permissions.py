"""The broker users' grants (shared.amqp.permissions), and the pure helpers of
gridflow.broker_users: names, exact regexes, escaping, URIs, the secrets file, the table."""

from __future__ import annotations

import io
import re
import stat
import sys
from pathlib import Path

import pytest

from gridflow import SERVICES
from gridflow.broker_users import (
    Credentials,
    ProvisionError,
    amqp_uri_for,
    default_admin_url,
    default_secrets_path,
    is_external,
    load_secrets,
    redacted,
    save_secrets,
    table,
    vhost_of,
)
from gridflow.supervisor import Supervisor, banner
from shared.amqp.permissions import (
    DEPARTMENT,
    SERVICE,
    default_prefix,
    department_grant,
    grants,
    service_grant,
)
from shared.amqp.topology import EXCHANGES, queues

DEPARTMENTS = ["fire", "police", "urban_mgmt"]


def matches(pattern: str, name: str) -> bool:
    """How RabbitMQ applies a permission: an unanchored search (the grants anchor)."""
    return re.search(pattern, name) is not None


def topic(grant, exchange: str):
    return next(t for t in grant.topics if t.exchange == exchange)


def test_a_department_may_read_its_queue_and_answer_as_itself_only() -> None:
    g = department_grant("fire")
    assert (g.name, g.role, g.subject, g.tags) == ("dept.fire", DEPARTMENT, "fire", ())
    assert g.permissions() == {"configure": "^$", "write": r"^gridflow\.responses$",
                               "read": r"^dispatch\.fire$"}
    assert [t.as_json() for t in g.topics] == [
        {"exchange": "gridflow.responses", "write": r"^fire\.", "read": "^$"}]
    assert matches(g.read, "dispatch.fire")
    for other in ("dispatch.police", "dispatch.fire.dlq", "dispatch.firex", "xdispatch.fire",
                  "dispatchXfire", "gridflow.responses"):
        assert not matches(g.read, other), other
    assert matches(g.write, "gridflow.responses")
    for other in ("gridflow.dispatch", "amq.default", "gridflow.responsesx", "dispatch.fire"):
        assert not matches(g.write, other), other
    assert not any(matches(g.configure, n) for n in ("dispatch.fire", "amq.gen-x", "mine"))
    answers = topic(g, "gridflow.responses").write
    assert matches(answers, "fire.ack") and matches(answers, "fire.resolve")
    for key in ("police.ack", "firex.ack", "xfire.ack", "fire", "fireXack"):
        assert not matches(answers, key), key


@pytest.mark.parametrize("code", ["a.b", "a+b", "x|y", "(c)", "d*", "e$f", "g[h]", "a-b"])
def test_a_department_code_is_taken_literally(code: str) -> None:
    g = department_grant(code)
    assert g.read == "^dispatch\\." + re.escape(code) + "$"
    assert topic(g, "gridflow.responses").write == "^" + re.escape(code) + "\\."
    assert matches(g.read, f"dispatch.{code}")
    assert matches(topic(g, "gridflow.responses").write, f"{code}.ack")
    # what the code would match as a regex is not the department's
    for other in ("dispatch.aXb", "dispatch.aab", "dispatch.x", "dispatch.c", "dispatch.d",
                  "dispatch.ddd", "dispatch.g", "dispatch.gh"):
        if other != f"dispatch.{code}":
            assert not matches(g.read, other), (code, other)
    assert not matches(topic(g, "gridflow.responses").write, "x.ack")


def test_every_service_has_its_own_user_none_an_administrator() -> None:
    users = [service_grant(s) for s in SERVICES]
    assert [u.name for u in users] == [f"gridflow-{s}" for s in SERVICES]
    for u in users:
        assert u.role == SERVICE and "administrator" not in u.tags
        assert u.tags == (("monitoring",) if u.subject == "monitor" else ())


def test_a_service_may_declare_the_whole_topology_and_its_own_rpc_names_only() -> None:
    g = service_grant("intake")
    names = [name for name, _, _ in EXCHANGES] + [q.name for q in queues(DEPARTMENTS)]
    names += ["nameko-rpc", "rpc-intake", "rpc.reply-intake-7d4c1e0a-0000-4000-8000-000000000000"]
    for name in names:
        for what in (g.configure, g.write, g.read):
            assert matches(what, name), (what, name)
    assert matches(g.write, "amq.default")  # retry queues dead-letter through it
    for what in (g.configure, g.read):
        assert not matches(what, "amq.default")
    for other in ("rpc-escalation", "rpc.reply-monitor-1", "amq.gen-abc", "other.app",
                  "rpc-intakex", "nameko-rpcx", "gridflow"):
        for what in (g.configure, g.write, g.read):
            assert not matches(what, other), (what, other)


def test_only_notify_dispatches_no_service_answers_and_each_beats_as_itself() -> None:
    for s in SERVICES:
        g = service_grant(s)
        dispatch = topic(g, "gridflow.dispatch")
        assert matches(dispatch.write, "fire.case.assigned") is (s == "notify")
        assert not matches(topic(g, "gridflow.responses").write, "fire.ack")
        beats = topic(g, "gridflow.heartbeats").write
        assert matches(beats, f"{s}.vm:12:abc")
        assert not any(matches(beats, f"{o}.vm:12:abc") for o in SERVICES if o != s)
        # every service binds the whole topology, and topic read is checked on queue.bind
        for t in g.topics:
            assert t.read == ".*"


def test_grants_list_the_services_then_the_departments_once_each() -> None:
    got = grants(["police", "fire", "fire"], ["intake", "routing"])
    assert [g.name for g in got] == ["gridflow-intake", "gridflow-routing", "dept.fire",
                                     "dept.police"]


def test_users_outside_the_default_vhost_are_qualified_by_it() -> None:
    assert default_prefix("/") == "" and default_prefix("") == ""
    assert default_prefix("prod") == "prod."
    got = grants(["fire"], ["notify"], default_prefix("prod"))
    assert [g.name for g in got] == ["prod.gridflow-notify", "prod.dept.fire"]
    assert got[1].read == r"^dispatch\.fire$"  # the queue names do not change


def test_uris() -> None:
    assert vhost_of("amqp://guest:guest@127.0.0.1:5672/") == "/"
    assert vhost_of("amqp://h:5672") == "/"
    assert vhost_of("amqp://h:5672/%2F") == "/"
    assert vhost_of("amqp://h/nameko_test_x") == "nameko_test_x"
    base = "amqp://guest:guest@127.0.0.1:5672/"
    assert amqp_uri_for(base, "dept.fire", "pw") == "amqp://dept.fire:pw@127.0.0.1:5672/"
    assert amqp_uri_for(base, "a@b", "p:w/x", "v/h") == "amqp://a%40b:p%3Aw%2Fx@127.0.0.1:5672/v%2Fh"
    assert amqp_uri_for("pyamqp://h:1/v?heartbeat=5", "u", "p") == "pyamqp://u:p@h:1/v?heartbeat=5"
    assert amqp_uri_for("amqp://h:1/v", "u", "p", "/") == "amqp://u:p@h:1/%2F"
    assert default_admin_url(base, env={}) == "http://guest:guest@127.0.0.1:15672"
    assert default_admin_url("amqp://adm:s3@broker.example:5672/v", env={}) == (
        "http://adm:s3@broker.example:15672")
    assert default_admin_url(base, env={"GRIDFLOW_RABBIT_ADMIN_URL": "http://a:b@x:1"}) == (
        "http://a:b@x:1")
    assert not is_external(base) and not is_external("amqp://localhost/")
    assert is_external("amqp://u:p@broker.example:5672/")
    assert redacted("http://guest:secret@127.0.0.1:15672/") == "http://127.0.0.1:15672/"


def test_the_secrets_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = default_secrets_path(tmp_path / "var")
    assert path == tmp_path / "var" / "secrets" / "broker-users.json"
    assert load_secrets(path) == {}
    save_secrets(path, {"dept.fire": {"password": "pw", "role": "department",
                                      "subject": "fire"}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secrets(path)["dept.fire"]["password"] == "pw"
    assert [p.name for p in path.parent.iterdir()] == ["broker-users.json"]  # no temp file
    path.write_text("not json")
    with pytest.raises(ProvisionError, match="cannot read the secrets file"):
        load_secrets(path)


def test_the_table_shows_passwords_only_when_asked(tmp_path: Path) -> None:
    got = grants(["fire"], ["notify"])
    creds = Credentials("/", "", tuple(got), {"gridflow-notify": "pw1", "dept.fire": "pw2"},
                        tmp_path / "s.json")
    plain = table(creds)
    assert "dept.fire" in plain and "dispatch.fire" in plain and "pw2" not in plain
    assert "gridflow.responses fire.<action>" in plain
    assert "pw1" in table(creds, show_passwords=True)
    assert creds.department_uri("amqp://guest:guest@h:5672/", "fire") == (
        "amqp://dept.fire:pw2@h:5672/")
    text = banner("127.0.0.1:8000", "amqp://guest:guest@h:5672/", tmp_path, ["fire"],
                  users=creds)
    assert str(tmp_path / "s.json") in text
    assert ("gridflow subscribe --department fire --amqp-uri "
            "amqp://dept.fire:PASSWORD@h:5672/") in text
    assert "pw2" not in text


def test_a_supervised_child_gets_its_own_environment_over_the_supervisor_s(
        tmp_path: Path) -> None:
    out = io.StringIO()
    sup = Supervisor([], tmp_path, out=out, env={"AMQP_URI": "amqp://admin", "KEEP": "1"})
    child = sup.add("probe", [sys.executable, "-c",
                              "import os; print(os.environ['AMQP_URI'], os.environ['KEEP'])"])
    child.env["AMQP_URI"] = "amqp://own"
    sup.start(child)
    assert child.proc is not None and child.proc.wait(30) == 0
    child.log.close()
    assert child.log_path.read_text().strip() == "amqp://own 1"
