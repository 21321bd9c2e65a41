"""Heartbeats and ``GET /metrics`` of real service containers, on the real broker, on SQLite
and PostgreSQL.

The heartbeats are read from ``gridflow.heartbeats`` in the test's vhost, as the monitor reads
them; the metrics from the service's own ``/metrics`` page, parsed as Prometheus would. The
registry is the process' (the tests share it), so every check is a difference.
"""

from __future__ import annotations

import itertools
import os
import socket
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import amqp
import kombu
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import gridflow
from services.escalation.service import EscalationService
from services.routing.service import RoutingService
from shared.amqp import topology as topo
from shared.clock import FakeClock
from shared.events import HEARTBEAT_TYPE, Event, decode_heartbeat, make_event
from shared.metrics import CONTENT_TYPE
from shared.reference import load_reference
from support import DEMO_CELL, reported_event, wait_for

BEAT_S = 0.2
QUEUE = topo.service_queue("routing")
NOW = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


# -- helpers -----------------------------------------------------------------------------------
_REF = load_reference(Path(__file__).resolve().parents[2] / "deploy" / "demo")


def routed() -> Event:
    """A case.routed with one assignment whose report-in and resolve deadlines are NOW."""
    ev = reported_event(1)
    return make_event("case.routed", ev.case_id, {
        "case": ev.data["case"],
        "tier": {"tier": "compound", "code": DEMO_CELL},
        "assignments": [{"department": "sanitation", "role": "lead",
                         "report_in_due": NOW, "resolve_due": NOW}],
        "policy": _REF.policy.snapshot(_REF.catalogue.get("E0101"), "normal", _REF.grid),
        "routed_at": NOW,
    }, producer="routing", at=NOW)


class Beats:
    """Every heartbeat that reaches ``gridflow.heartbeats``, with its AMQP properties."""

    def __init__(self, amqp_uri: str) -> None:
        self.conn = kombu.Connection(amqp_uri)
        self.channel = self.conn.channel()
        topo.declare_heartbeats(self.channel)  # as the services declare it
        self.channel.queue_purge(topo.HEARTBEATS_QUEUE)
        self.got: list[tuple[dict[str, Any], Any]] = []

    def poll(self) -> list[tuple[dict[str, Any], Any]]:
        while (msg := self.channel.basic_get(topo.HEARTBEATS_QUEUE, no_ack=True)) is not None:
            self.got.append((decode_heartbeat(msg.body), msg))
        return self.got

    def of(self, service: str) -> list[dict[str, Any]]:
        return [b for b, _ in self.poll() if b["service"] == service]

    def close(self) -> None:
        self.conn.release()


@pytest.fixture
def beats(rabbit_config: dict[str, Any]) -> Any:
    b = Beats(rabbit_config["AMQP_URI"])
    yield b
    b.close()


@pytest.fixture
def config(service_config: dict[str, Any]) -> dict[str, Any]:
    return {**service_config, "GRIDFLOW_HEARTBEAT_S": BEAT_S, "GRIDFLOW_MAX_ATTEMPTS": 2}


def metrics_of(container: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The container's /metrics page: {(sample name, labels): value}."""
    token = container.config["GRIDFLOW_METRICS_TOKEN"]
    r = requests.get(f"http://{container.config['WEB_SERVER_ADDRESS']}/metrics", timeout=10,
                     headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == CONTENT_TYPE
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(page: dict[Any, float], name: str, **labels: str) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


def send(amqp_uri: str, body: bytes, type_: str, message_id: str) -> None:
    with kombu.Connection(amqp_uri) as conn:
        channel = conn.channel()
        topo.declare(channel, [])
        channel.basic_publish_confirm(
            amqp.Message(body, content_type="application/json", delivery_mode=2,
                         message_id=message_id, type=type_,
                         application_headers={"schema_version": 1}),
            exchange=topo.EVENTS_EXCHANGE, routing_key=type_, mandatory=True,
        )


def send_event(amqp_uri: str, ev: Event) -> None:
    send(amqp_uri, ev.to_json(), ev.type, ev.event_id)


def moved(container: Any, name: str, by: float, before: dict[Any, float],
          **labels: str) -> Callable[[], Any]:
    """A wait_for condition: the sample grew by ``by`` since ``before``."""
    target = value(before, name, **labels) + by

    def check() -> Any:
        now = value(metrics_of(container), name, **labels)
        return now >= target and (now,)

    return check


# -- heartbeats --------------------------------------------------------------------------------
def test_a_service_beats_every_interval_and_says_when_it_stops(
    run_services: Any, config: dict[str, Any], beats: Beats
) -> None:
    started = datetime.now(UTC)
    routing = run_services(RoutingService, config=config)["routing"]

    wait_for(lambda: len(beats.of("routing")) >= 6, timeout=10, what="6 heartbeats")
    got = [(b, m) for b, m in beats.poll() if b["service"] == "routing"]
    first = got[0][0]
    assert first["instance"].startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert first["host"] == socket.gethostname() and first["pid"] == os.getpid()
    assert first["version"] == gridflow.__version__
    assert first["interval_s"] == BEAT_S
    assert started - timedelta(seconds=1) <= first["started_at"] <= first["sent_at"]
    for body, msg in got:
        assert body["state"] == "up"
        assert {k: body[k] for k in ("instance", "started_at")} == {
            "instance": first["instance"], "started_at": first["started_at"]}
        assert msg.delivery_info["routing_key"] == f"routing.{first['instance']}"
        assert msg.delivery_info["exchange"] == topo.HEARTBEATS_EXCHANGE
        props = msg.properties
        assert props["content_type"] == "application/json"
        assert props["type"] == HEARTBEAT_TYPE
        assert props["delivery_mode"] == 1
    ids = [m.properties["message_id"] for _, m in got]
    assert len(set(ids)) == len(ids)

    gaps = [(b["sent_at"] - a["sent_at"]).total_seconds()
            for (a, _), (b, _) in itertools.pairwise(got)]
    assert 0.15 <= statistics.median(gaps) <= 0.5, gaps

    routing.stop()
    last = wait_for(lambda: [b for b in beats.of("routing") if b["state"] == "stopping"],
                    timeout=5, what="the stopping heartbeat")
    assert len(last) == 1 and last[0]["instance"] == first["instance"]
    time.sleep(3 * BEAT_S)
    after = beats.of("routing")
    assert after[-1]["state"] == "stopping", "no beat may follow the stopping one"


def test_each_service_container_is_an_instance_of_its_own(
    run_services: Any, config: dict[str, Any], beats: Beats
) -> None:
    run_services(RoutingService, EscalationService, config=config)
    wait_for(lambda: beats.of("routing") and beats.of("escalation"), timeout=10,
             what="heartbeats of both")
    assert beats.of("routing")[0]["instance"] != beats.of("escalation")[0]["instance"]


def test_heartbeats_carry_on_after_the_connection_broke(
    run_services: Any, config: dict[str, Any], beats: Beats, caplog: Any
) -> None:
    routing = run_services(RoutingService, config=config)["routing"]
    wait_for(lambda: beats.of("routing"), timeout=10, what="a first heartbeat")
    heartbeat = next(d for d in routing.dependencies if d.attr_name == "heartbeat")
    assert heartbeat._conn is not None
    # the socket dies under the heartbeat: its next write fails, the one after reconnects
    heartbeat._conn.connection.transport.sock.shutdown(socket.SHUT_RDWR)
    count = len(beats.of("routing"))
    wait_for(lambda: len(beats.of("routing")) >= count + 3, timeout=10,
             what="heartbeats after the connection broke")
    assert caplog.text.count("heartbeat not sent") == 1, "one warning per outage"
    assert routing.started and not routing._died.ready()


# -- metrics -----------------------------------------------------------------------------------
def test_metrics_count_handled_retried_and_dead_lettered_events(
    run_services: Any, config: dict[str, Any], rabbit_config: dict[str, Any]
) -> None:
    amqp_uri = rabbit_config["AMQP_URI"]
    routing = run_services(RoutingService, config=config)["routing"]
    before = metrics_of(routing)
    ok = {"service": "routing", "queue": QUEUE, "event": "case.reported", "outcome": "ok"}

    send_event(amqp_uri, reported_event(1))
    wait_for(moved(routing, "gridflow_events_handled_total", 1, before, **ok), timeout=15,
             what="events_handled_total{outcome=ok} +1")
    wait_for(moved(routing, "gridflow_outbox_published_total", 1, before, service="routing"),
             timeout=15, what="the relay published case.routed")
    page = metrics_of(routing)
    assert value(page, "gridflow_events_handled_total", **ok) == (
        value(before, "gridflow_events_handled_total", **ok) + 1)
    assert value(page, "gridflow_handler_seconds_count", service="routing",
                 event="case.reported") >= value(before, "gridflow_handler_seconds_count",
                                                 service="routing", event="case.reported") + 1
    assert ("gridflow_outbox_backlog", frozenset({("service", "routing")})) in page
    assert value(page, "gridflow_outbox_backlog", service="routing") == 0

    # a message that is no event, and an event routing cannot route: dead-lettered
    dead = {"service": "routing", "queue": QUEUE, "event": "case.reported",
            "outcome": "dead_lettered"}
    send(amqp_uri, b"not json", "case.reported", "poison-1")
    unroutable = reported_event(2)
    unroutable.data["case"]["category"] = "Z9999"
    send(amqp_uri, unroutable.to_json(), "case.reported", unroutable.event_id)
    wait_for(moved(routing, "gridflow_events_handled_total", 2, before, **dead), timeout=15,
             what="events_handled_total{outcome=dead_lettered} +2")
    wait_for(moved(routing, "gridflow_dead_letters_total", 2, before, service="routing",
                   queue=QUEUE), timeout=5, what="dead_letters_total +2")
    assert value(metrics_of(routing), "gridflow_events_handled_total", **ok) == (
        value(before, "gridflow_events_handled_total", **ok) + 1)

    # a whistle on a case routing has not seen: retried
    whistle = make_event("case.whistled", "20261123-999999", {
        "level": "routine", "departments": ["housing"],
        "by": {"name": "胡涛", "tier": "community", "code": DEMO_CELL[:12]},
        "whistled_at": NOW}, producer="intake", at=NOW)
    send_event(amqp_uri, whistle)
    wait_for(moved(routing, "gridflow_events_handled_total", 1, before, service="routing",
                   queue=QUEUE, event="case.whistled", outcome="retried"),
             timeout=15, what="events_handled_total{outcome=retried} +1")


def test_metrics_count_http_requests_by_route(
    run_services: Any, config: dict[str, Any]
) -> None:
    routing = run_services(RoutingService, config=config)["routing"]
    base = f"http://{routing.config['WEB_SERVER_ADDRESS']}"
    before = metrics_of(routing)
    assert requests.get(f"{base}/health", timeout=10).json() == {"service": "routing",
                                                                  "status": "ok"}
    assert requests.get(f"{base}/nowhere", timeout=10).status_code == 404
    page = metrics_of(routing)
    labels = {"service": "routing", "method": "GET", "route": "/health", "status": "200"}
    assert value(page, "gridflow_http_requests_total", **labels) == (
        value(before, "gridflow_http_requests_total", **labels) + 1)
    assert value(page, "gridflow_http_request_seconds_count", service="routing",
                 route="/health") >= 1
    # the scrape before this one was counted too, under its route
    assert value(page, "gridflow_http_requests_total", service="routing", method="GET",
                 route="/metrics", status="200") >= 1


def test_escalation_shows_the_clocks_due_and_its_outbox(
    run_services: Any, config: dict[str, Any], rabbit_config: dict[str, Any]
) -> None:
    clock = FakeClock(NOW - timedelta(hours=1))
    escalation = run_services(EscalationService, clock=clock, config=config)["escalation"]
    page = metrics_of(escalation)
    assert value(page, "gridflow_clocks_due", service="escalation") == 0
    assert ("gridflow_outbox_backlog", frozenset({("service", "escalation")})) in page

    before = page
    send_event(rabbit_config["AMQP_URI"], routed())
    wait_for(moved(escalation, "gridflow_events_handled_total", 1, before,
                   service="escalation", queue=topo.service_queue("escalation"),
                   event="case.routed", outcome="ok"), timeout=15, what="case.routed handled")
    assert value(metrics_of(escalation), "gridflow_clocks_due", service="escalation") == 0
    clock.advance(timedelta(hours=2))  # both deadlines passed; the ticker is off (3600 s)
    assert value(metrics_of(escalation), "gridflow_clocks_due", service="escalation") == 2
