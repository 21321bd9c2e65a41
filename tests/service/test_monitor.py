"""The monitor service on the real broker and database: logging in, collecting dead
letters, replaying and discarding them (audited), queue figures with and without the
management plugin, and service instances from their heartbeats."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
import requests
from nameko.testing.utils import find_free_port

from services.monitor.service import MonitorService
from services.routing.service import RoutingService
from support import BaseUrlSession, wait_for

FAST = {"GRIDFLOW_MONITOR_COLLECT_S": 0.2, "GRIDFLOW_MONITOR_SAMPLE_S": 0.3,
        "GRIDFLOW_HEARTBEAT_S": 0.3, "GRIDFLOW_MONITOR_PASSWORD": "night-shift"}


class Console(BaseUrlSession):
    def login(self, password: str = "night-shift") -> requests.Response:
        return self.post("/api/login", json={"name": "operator", "password": password})


@pytest.fixture
def monitor(run_services: Any, service_config: dict[str, Any]) -> Iterator[Console]:
    containers = run_services(MonitorService, config={**service_config, **FAST})
    address = containers["monitor"].config["WEB_SERVER_ADDRESS"]
    with Console(f"http://{address}") as console:
        assert console.login().status_code == 200
        yield console


def publish_to_department(amqp_uri: str, body: dict[str, Any], message_id: str) -> None:
    with kombu.Connection(amqp_uri) as conn:
        producer = conn.Producer()
        producer.publish(json.dumps(body), exchange="gridflow.dispatch",
                         routing_key="fire.case.assigned", message_id=message_id,
                         type="case.assigned", content_type="application/json",
                         delivery_mode=2, headers={"schema_version": 1})


def take_one(amqp_uri: str, queue: str, *, reject: bool = False) -> Any:
    """The next message of ``queue``: acked, or rejected without requeue (a department's
    system refusing it: RabbitMQ dead-letters it)."""
    with kombu.Connection(amqp_uri) as conn:
        channel = conn.channel()
        msg = wait_for(lambda: channel.basic_get(queue, no_ack=False), what=f"a message on {queue}")
        if reject:
            channel.basic_reject(msg.delivery_tag, requeue=False)
        else:
            channel.basic_ack(msg.delivery_tag)
        return msg


def parked(console: Console, **query: Any) -> list[dict[str, Any]]:
    return console.get("/api/dead-letters", params=query).json()["items"]


def test_every_api_needs_a_logged_in_operator(run_services, service_config):
    containers = run_services(MonitorService, config={**service_config, **FAST})
    base = f"http://{containers['monitor'].config['WEB_SERVER_ADDRESS']}"
    with Console(base) as anonymous:
        for path in ("/api/queues", "/api/services", "/api/dead-letters", "/api/audit",
                     "/api/funnel", "/api/measures", "/api/ledger", "/api/me"):
            r = anonymous.get(path)
            assert r.status_code == 401, path
            assert "log in" in r.json()["errors"]["_auth"][0]
        assert anonymous.post("/api/dead-letters/replay", json={"all": True}).status_code == 401
        assert anonymous.get("/").status_code == 200  # the page itself shows the login form
        assert anonymous.login("wrong").status_code == 401
        r = anonymous.post("/api/login", json={"name": "operator"})
        assert r.status_code == 422 and "password" in r.json()["errors"]
        assert anonymous.login().status_code == 200
        assert anonymous.get("/api/me").json() == {"operator": "operator", "role": "operator",
                                                   "key_id": None, "grid": None}
        actions = [a["action"] for a in anonymous.get("/api/audit").json()["items"]]
        assert actions[:2] == ["login", "login_failed"]
        anonymous.post("/api/logout")
        assert anonymous.get("/api/me").status_code == 401


def test_a_rejected_dispatch_is_collected_replayed_and_reaches_its_department(
    monitor, rabbit_config
):
    uri = rabbit_config["AMQP_URI"]
    body = {"type": "case.assigned", "case_id": "20261123-000007", "data": {"role": "lead"}}
    publish_to_department(uri, body, "m-fire-1")
    take_one(uri, "dispatch.fire", reject=True)  # the fire brigade's system refuses it

    letter = wait_for(lambda: parked(monitor), what="the dead letter collected")[0]
    assert letter["queue"] == "dispatch.fire" and letter["dlq"] == "dispatch.fire.dlq"
    assert letter["routing_key"] == "fire.case.assigned"
    assert letter["exchange"] == "gridflow.dispatch"
    assert letter["reason"].startswith("rejected by its consumer")
    assert letter["first_death_at"] and letter["message_id"] == "m-fire-1"
    assert json.loads(letter["payload"]) == body
    full = monitor.get(f"/api/dead-letters/{letter['id']}").json()
    assert full["headers"]["x-death"][0]["queue"] == "dispatch.fire"
    with kombu.Connection(uri) as conn:  # collected: the DLQ itself is empty
        assert conn.channel().queue_declare("dispatch.fire.dlq", passive=True)[1] == 0

    r = monitor.post("/api/dead-letters/replay", json={"ids": [letter["id"], 99999]})
    assert r.status_code == 200
    assert r.json() == {"replayed": [letter["id"]], "failed": {}, "not_parked": [99999]}
    again = take_one(uri, "dispatch.fire")
    assert again.properties["message_id"] == "m-fire-1"
    assert json.loads(again.body) == body
    headers = again.headers or {}
    assert "x-death" not in headers and headers["x-gridflow-replayed-by"] == "operator"

    assert parked(monitor) == []
    done = parked(monitor, state="replayed")
    assert [d["id"] for d in done] == [letter["id"]] and done[0]["decided_by"] == "operator"
    audit = monitor.get("/api/audit").json()["items"][0]
    assert (audit["action"], audit["target"], audit["operator"]) == (
        "replay", f"dead_letter:{letter['id']}", "operator")
    # replaying it again does nothing: it is no longer parked
    r = monitor.post("/api/dead-letters/replay", json={"ids": [letter["id"]]})
    assert r.json()["replayed"] == [] and r.json()["not_parked"] == [letter["id"]]


def test_dead_letters_are_discarded_with_a_reason_and_replayed_all_at_once(
    monitor, rabbit_config
):
    uri = rabbit_config["AMQP_URI"]
    for n in range(3):
        publish_to_department(uri, {"n": n}, f"m-{n}")
        take_one(uri, "dispatch.fire", reject=True)
    letters = wait_for(lambda: len(parked(monitor)) == 3 and parked(monitor))
    first = letters[-1]["id"]

    r = monitor.post("/api/dead-letters/discard", json={"ids": [first]})
    assert r.status_code == 422 and "reason" in r.json()["errors"]
    r = monitor.post("/api/dead-letters/discard", json={"ids": [first], "all": True,
                                                        "reason": "test data"})
    assert r.status_code == 422 and "ids" in r.json()["errors"]
    r = monitor.post("/api/dead-letters/discard", json={"ids": [first],
                                                        "reason": "演练数据, not a real case"})
    assert r.json() == {"discarded": [first], "not_parked": []}
    gone = parked(monitor, state="discarded")[0]
    assert gone["note"] == "演练数据, not a real case" and gone["decided_by"] == "operator"

    r = monitor.post("/api/dead-letters/replay", json={"all": True, "queue": "dispatch.fire"})
    assert sorted(r.json()["replayed"]) == sorted(d["id"] for d in letters[:2])
    got = sorted(take_one(uri, "dispatch.fire").properties["message_id"] for _ in range(2))
    assert got == ["m-1", "m-2"]
    actions = [a["action"] for a in monitor.get("/api/audit").json()["items"]]
    assert actions[:3] == ["replay", "replay", "discard"]


def test_a_selection_larger_than_one_batch_is_replayed_whole(monitor, rabbit_config,
                                                             monkeypatch):
    import services.monitor.service as shell

    monkeypatch.setattr(shell, "REPLAY_BATCH", 1)
    uri = rabbit_config["AMQP_URI"]
    for n in range(2):
        publish_to_department(uri, {"n": n}, f"m-batch-{n}")
        take_one(uri, "dispatch.fire", reject=True)
    ids = [d["id"] for d in wait_for(lambda: len(parked(monitor)) == 2 and parked(monitor))]
    r = monitor.post("/api/dead-letters/replay", json={"ids": ids})
    assert sorted(r.json()["replayed"]) == sorted(ids) and r.json()["not_parked"] == []
    got = sorted(take_one(uri, "dispatch.fire").properties["message_id"] for _ in range(2))
    assert got == ["m-batch-0", "m-batch-1"]


def test_a_message_collected_twice_is_stored_once(monitor, rabbit_config):
    """A crash between the commit and the ack gives the same message back: one row."""
    uri = rabbit_config["AMQP_URI"]
    headers = {"x-gridflow-reason": "PoisonEvent: bad", "x-gridflow-queue": "gridflow.routing",
               "x-gridflow-failed-at": "2026-11-23T01:00:00+00:00"}
    with kombu.Connection(uri) as conn:
        producer = conn.Producer()
        for _ in range(2):
            producer.publish("{}", exchange="gridflow.dlx", routing_key="gridflow.routing",
                             message_id="dup", headers=headers, delivery_mode=2)
    wait_for(lambda: parked(monitor))
    time.sleep(1.0)  # several collection rounds
    assert len(parked(monitor)) == 1


def test_a_batch_whose_commit_failed_goes_back_and_is_collected_next_round(
    monitor, rabbit_config, monkeypatch
):
    """Held unacked on the monitor's open channel, a failed batch would wait there for
    ever: it is given back at once and collected by a later round."""
    from services.monitor import records

    real, failures = records.collect, []

    def flaky(*args: Any, **kwargs: Any) -> int:
        if not failures:
            failures.append(1)
            raise RuntimeError("database hiccup")
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "collect", flaky)
    uri = rabbit_config["AMQP_URI"]
    publish_to_department(uri, {"n": 1}, "m-flaky")
    take_one(uri, "dispatch.fire", reject=True)
    letter = wait_for(lambda: parked(monitor), what="the letter collected after all")[0]
    assert failures == [1] and letter["message_id"] == "m-flaky"


def test_queue_figures_flag_missing_consumers_and_growing_backlogs(monitor, rabbit_config):
    uri = rabbit_config["AMQP_URI"]

    def queues() -> dict[str, dict[str, Any]]:
        body = monitor.get("/api/queues").json()
        assert body["source"] == "management API"
        return {q["name"]: q for q in body["queues"]}

    qs = wait_for(lambda: "dispatch.fire" in queues() and queues())
    assert "no consumer" in qs["dispatch.fire"]["alerts"]
    assert "no consumer" in qs["gridflow.routing"]["alerts"]  # routing is not running
    assert {"ready", "unacked", "consumers", "publish_rate", "deliver_rate"} <= set(
        qs["gridflow.routing"])
    with kombu.Connection(uri) as conn:
        producer = conn.Producer()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for _ in range(20):
                producer.publish("{}", routing_key="gridflow.routing", delivery_mode=2)
            q = queues()["gridflow.routing"]
            if "backlog growing" in q["alerts"]:
                break
            time.sleep(0.3)
    assert "backlog growing" in q["alerts"] and q["ready"] >= 20


def test_without_the_management_plugin_passive_declares_give_depths(
    run_services, service_config, rabbit_config
):
    config = {**service_config, **FAST,
              "GRIDFLOW_RABBITMQ_MANAGEMENT_URL": f"http://127.0.0.1:{find_free_port()}"}
    containers = run_services(MonitorService, config=config)
    with Console(f"http://{containers['monitor'].config['WEB_SERVER_ADDRESS']}") as console:
        console.login()
        with kombu.Connection(rabbit_config["AMQP_URI"]) as conn:
            conn.Producer().publish("{}", routing_key="gridflow.notify", delivery_mode=2)

        def figures() -> dict[str, Any] | None:
            body = console.get("/api/queues").json()
            by_name = {q["name"]: q for q in body["queues"]}
            return body if by_name.get("gridflow.notify", {}).get("ready") == 1 else None

        body = wait_for(figures, what="figures from passive declares")
        assert body["source"] == "passive declares"
        notify = next(q for q in body["queues"] if q["name"] == "gridflow.notify")
        assert notify["consumers"] == 0 and "no consumer" in notify["alerts"]
        assert notify["publish_rate"] is None  # only the management API knows rates


def test_instances_show_up_from_their_heartbeats_and_down_within_10_s_of_dying(
    monitor, run_services, service_config
):
    routing = run_services(RoutingService, config={**service_config, **FAST})["routing"]

    def status(service: str) -> str | None:
        rows = monitor.get("/api/services").json()["services"]
        return next((r["status"] for r in rows if r["service"] == service), None)

    wait_for(lambda: status("routing") == "up", what="routing up")
    instance = next(i for i in monitor.get("/api/services").json()["instances"]
                    if i["service"] == "routing")
    assert instance["pid"] > 0 and instance["version"] and instance["host"]
    assert status("monitor") == "up"  # the monitor beats too
    routing.kill()  # no goodbye beat: down because the beats stop
    wait_for(lambda: status("routing") == "down", timeout=10, what="routing down")
