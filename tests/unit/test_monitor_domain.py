"""The monitor's plain rules: reading dead letters, replay plans, queue flags, instance
status, operators' passwords and sessions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.monitor import auth, deadletters, instances, queues

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
EVENT = json.dumps({"type": "case.routed", "case_id": "20261123-000001"})


def test_a_letter_gridflow_dead_lettered_names_its_queue_route_reason_and_time():
    d = deadletters.read(
        "gridflow.escalation.dlq",
        {"message_id": "m-1", "type": "case.routed", "content_type": "application/json"},
        {
            "x-gridflow-reason": "PoisonEvent: unknown department 'zoo'",
            "x-gridflow-queue": "gridflow.escalation",
            "x-gridflow-original-exchange": "gridflow.events",
            "x-gridflow-original-routing-key": "case.routed",
            "x-gridflow-failed-at": T0.isoformat(),
            "x-gridflow-service": "escalation",
        },
        EVENT.encode(),
    )
    assert (d.queue, d.exchange, d.routing_key) == (
        "gridflow.escalation", "gridflow.events", "case.routed")
    assert d.reason == "PoisonEvent: unknown department 'zoo'"
    assert d.first_death_at == T0 and d.service == "escalation" and d.message_id == "m-1"
    assert deadletters.payload_preview(d.body) == "case.routed 20261123-000001"


def test_a_letter_rabbitmq_dead_lettered_reads_x_death_oldest_entry():
    x_death = [
        {"queue": "dispatch.fire", "reason": "rejected", "exchange": "gridflow.dispatch",
         "routing-keys": [b"fire.case.assigned"], "time": T0 + timedelta(minutes=5), "count": 1},
        {"queue": "dispatch.fire", "reason": "rejected", "exchange": "gridflow.dispatch",
         "routing-keys": [b"fire.case.assigned"], "time": T0, "count": 1},
    ]
    d = deadletters.read("dispatch.fire.dlq", {"message_id": "m-2"}, {"x-death": x_death}, b"{}")
    assert d.queue == "dispatch.fire" and d.exchange == "gridflow.dispatch"
    assert d.routing_key == "fire.case.assigned"
    assert d.reason.startswith("rejected by its consumer")
    assert d.first_death_at == T0


def test_odd_letters_are_read_not_refused_and_keyed_by_content():
    d = deadletters.read("gridflow.routing.dlq", {}, None, b"\xff\xfe not json")
    assert d.queue == "gridflow.routing" and d.reason == "unknown" and d.first_death_at is None
    again = deadletters.read("gridflow.routing.dlq", {}, None, b"\xff\xfe not json")
    other = deadletters.read("gridflow.notify.dlq", {}, None, b"\xff\xfe not json")
    assert d.key == again.key != other.key


def test_a_replay_goes_to_the_queue_it_died_in_without_its_death_headers():
    headers = {"x-death": [{}], "x-gridflow-reason": "boom", "x-gridflow-attempts": 6,
               "x-gridflow-queue": "gridflow.notify", "producer": "routing"}
    plan = deadletters.replay_of("gridflow.notify", headers, by="op", at=T0)
    assert (plan.exchange, plan.routing_key) == ("", "gridflow.notify")
    assert plan.headers["producer"] == "routing"
    assert not {"x-death", "x-gridflow-reason", "x-gridflow-attempts"} & set(plan.headers)
    assert plan.headers["x-gridflow-replayed-by"] == "op"
    assert plan.headers["x-gridflow-replays"] == 1
    twice = deadletters.replay_of("gridflow.notify", plan.headers, by="op", at=T0)
    assert twice.headers["x-gridflow-replays"] == 2


def _q(name: str, ready: int = 0, consumers: int = 1) -> queues.QueueStatus:
    return queues.from_declare(name, ready, consumers)


def test_queues_without_a_consumer_and_growing_backlogs_are_flagged_first():
    tracker = queues.BacklogTracker(window=3)
    for depth in (1, 5, 9):
        tracker.observe([_q("gridflow.routing", depth), _q("dispatch.fire", 2, 0),
                         _q("gridflow.retry.5s", depth, 0), _q("gridflow.notify", 0)])
    out = queues.assess([_q("gridflow.notify", 0), _q("gridflow.routing", 9),
                         _q("dispatch.fire", 2, 0), _q("gridflow.retry.5s", 9, 0)], tracker)
    flags = {q.name: q.alerts for q in out}
    assert flags["gridflow.routing"] == ["backlog growing"]
    assert flags["dispatch.fire"] == ["no consumer"]
    assert flags["gridflow.retry.5s"] == []  # retry queues wait for their TTL, by design
    assert flags["gridflow.notify"] == []
    assert [q.name for q in out][-1] in ("gridflow.notify", "gridflow.retry.5s")


def test_a_steady_or_draining_backlog_is_not_growing():
    tracker = queues.BacklogTracker(window=3, jump=50)
    for depth in (10, 10, 10, 8):
        tracker.observe([_q("gridflow.intake", depth)])
    assert not tracker.growing("gridflow.intake")
    tracker.observe([_q("gridflow.intake", 70)])
    assert tracker.growing("gridflow.intake")  # a jump of 50 or more counts at once


def test_queue_kinds():
    assert queues.kind_of("gridflow.routing.dlq") == queues.DEAD_LETTERS
    assert queues.kind_of("dispatch.tier.community") == queues.TIER
    assert queues.kind_of("dispatch.police") == queues.DISPATCH
    assert queues.kind_of("gridflow.retry.30s") == queues.RETRY
    assert queues.kind_of("gridflow.heartbeats") == queues.OTHER


def _instance(last_seen: datetime, state: str = "up", interval: float = 2.0):
    return instances.Instance("h:1:a", "routing", "h", 1, "0.1.0", T0, last_seen, interval, state)


def test_an_instance_is_down_after_three_missed_beats_and_never_later_than_8_s():
    assert instances.status(_instance(T0), T0 + timedelta(seconds=6)) == "up"
    assert instances.status(_instance(T0), T0 + timedelta(seconds=6.1)) == "down"
    slow = _instance(T0, interval=30)
    assert instances.status(slow, T0 + timedelta(seconds=8.1)) == "down"
    assert instances.status(_instance(T0, "stopping"), T0) == "down"


def test_a_service_with_no_instance_up_is_down_in_the_summary():
    s = instances.summary([_instance(T0)], T0 + timedelta(seconds=30), ["intake", "routing"])
    assert {r["service"]: r["status"] for r in s["services"]} == {
        "intake": "down", "routing": "down"}
    assert s["instances"][0]["status"] == "down"


def test_passwords_and_sessions():
    stored = auth.hash_password("s3cret")
    assert auth.check_password("s3cret", stored) and not auth.check_password("S3cret", stored)
    assert not auth.check_password("x", "plain")
    token = auth.issue_token(b"k", "胡涛", now=1000.0)
    assert auth.operator_of(b"k", token, now=1001.0) == "胡涛"
    assert auth.operator_of(b"other", token, now=1001.0) is None
    assert auth.operator_of(b"k", token, now=1000.0 + auth.SESSION_HOURS * 3600 + 1) is None
    forged = token.replace(token.split(".")[0], auth.issue_token(b"x", "admin").split(".")[0])
    assert auth.operator_of(b"k", forged) is None
    assert auth.operator_of(b"k", "garbage") is None


@pytest.mark.parametrize("spec,users", [
    ("a:1,b:2", {"a": "1", "b": "2"}), (" a:x:y ", {"a": "x:y"}), ("nocolon,", {}),
])
def test_operator_list_from_config(spec, users):
    assert auth.parse_users(spec) == users
