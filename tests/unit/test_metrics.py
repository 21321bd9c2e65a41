"""Heartbeats (the contract the monitor reads) and the Prometheus metrics every service serves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import gridflow
from shared import metrics
from shared.amqp.topology import (
    EXCHANGES,
    HEARTBEATS_EXCHANGE,
    HEARTBEATS_QUEUE,
    declare_heartbeats,
    heartbeat_routing_key,
    queues,
)
from shared.events import (
    HEARTBEAT_STATES,
    HEARTBEAT_TYPE,
    INTERNAL,
    PUBLIC,
    InvalidEvent,
    decode_heartbeat,
    heartbeat_body,
)
from shared.extensions.observability import Observed
from shared.outbox import OutboxRelay

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
BEAT: dict[str, Any] = {
    "service": "routing",
    "instance": "gridflow-1:4242:0a1b2c3d",
    "host": "gridflow-1",
    "pid": 4242,
    "version": "0.1.0",
    "started_at": "2026-11-23T01:00:00+00:00",
    "sent_at": "2026-11-23T01:00:02.004+00:00",
    "interval_s": 2.0,
    "state": "up",
}


def raw(**changes: Any) -> bytes:
    body = {**BEAT, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


# -- the heartbeat contract --------------------------------------------------------------------


def test_a_valid_heartbeat_decodes_with_aware_datetimes() -> None:
    beat = decode_heartbeat(raw())
    assert beat["service"] == "routing" and beat["instance"] == "gridflow-1:4242:0a1b2c3d"
    assert beat["pid"] == 4242 and beat["interval_s"] == 2.0 and beat["state"] == "up"
    assert beat["started_at"] == T0
    assert beat["sent_at"] == T0 + timedelta(seconds=2.004)
    assert beat["sent_at"].tzinfo is not None


def test_a_stopping_heartbeat_and_a_str_body_decode() -> None:
    assert decode_heartbeat(raw(state="stopping").decode())["state"] == "stopping"
    assert HEARTBEAT_STATES == ("up", "stopping")


def test_unknown_fields_are_ignored_a_tolerant_reader() -> None:
    assert "extra" not in decode_heartbeat(raw(extra={"a": 1}))


def test_heartbeat_body_round_trips_and_is_compact_json() -> None:
    body = heartbeat_body(**{**BEAT, "started_at": T0, "sent_at": T0})
    assert b" " not in body
    assert set(json.loads(body)) == set(BEAT)
    assert decode_heartbeat(body)["sent_at"] == T0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("service", ...),
        ("service", ""),
        ("service", 7),
        ("instance", ...),
        ("instance", ""),
        ("host", ...),
        ("host", None),
        ("pid", ...),
        ("pid", "4242"),
        ("pid", -1),
        ("pid", 1.5),
        ("version", ...),
        ("version", ""),
        ("started_at", ...),
        ("started_at", "2026-11-23T01:00:00"),  # naive
        ("started_at", "yesterday"),
        ("sent_at", ...),
        ("sent_at", "0001-01-01T00:00:00+14:00"),  # off the calendar
        ("interval_s", ...),
        ("interval_s", 0),
        ("interval_s", -2),
        ("interval_s", "fast"),
        ("state", ...),
        ("state", "down"),
        ("state", "UP"),
    ],
)
def test_a_bad_field_is_named(field: str, value: Any) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_heartbeat(raw(**{field: value}))
    assert str(err.value).startswith(f"heartbeat: {field}: "), str(err.value)


@pytest.mark.parametrize(("body", "says"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"service": "a\\u0000b"}', "NUL"),
])
def test_a_body_that_is_no_json_object_is_refused(body: bytes, says: str) -> None:
    with pytest.raises(InvalidEvent, match=says):
        decode_heartbeat(body)


def test_several_bad_fields_are_all_named() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_heartbeat(raw(pid="x", state="z"))
    assert "pid: " in str(err.value) and "state: " in str(err.value)


def test_heartbeat_body_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(InvalidEvent, match="started_at"):
        heartbeat_body(**{**BEAT, "started_at": datetime(2026, 11, 23), "sent_at": T0})
    with pytest.raises(InvalidEvent, match="state"):
        heartbeat_body(**{**BEAT, "started_at": T0, "sent_at": T0, "state": "gone"})


def test_a_heartbeat_is_no_event_of_the_catalogues() -> None:
    assert HEARTBEAT_TYPE == "service.heartbeat"
    assert HEARTBEAT_TYPE not in INTERNAL and HEARTBEAT_TYPE not in PUBLIC


def test_the_version_comes_from_the_package() -> None:
    assert isinstance(gridflow.__version__, str) and gridflow.__version__


# -- the heartbeat topology --------------------------------------------------------------------


def test_heartbeats_have_their_own_topic_exchange_without_alternate() -> None:
    assert (HEARTBEATS_EXCHANGE, HEARTBEATS_QUEUE) == ("gridflow.heartbeats",
                                                      "gridflow.heartbeats")
    assert (HEARTBEATS_EXCHANGE, "topic", {}) in EXCHANGES


def test_the_heartbeat_queue_is_a_short_lived_bounded_quorum_queue_without_dlx() -> None:
    spec = {s.name: s for s in queues([])}[HEARTBEATS_QUEUE]
    assert spec.arguments == {"x-queue-type": "quorum", "x-message-ttl": 30_000,
                              "x-max-length": 10_000}
    assert spec.bindings == ((HEARTBEATS_EXCHANGE, "#"),)


def test_routing_key_is_service_dot_instance_within_255_bytes() -> None:
    assert heartbeat_routing_key("routing", "h:1:ab") == "routing.h:1:ab"
    long = heartbeat_routing_key("notify", "网" * 200)
    assert len(long.encode()) <= 255 and long.startswith("notify.")


def test_declare_heartbeats_declares_what_declare_does() -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    class Channel:
        def __getattr__(self, name: str) -> Any:
            return lambda *a, **kw: calls.append((name, a, kw))

    declare_heartbeats(Channel())
    assert calls == [
        ("exchange_declare", (HEARTBEATS_EXCHANGE, "topic"),
         {"durable": True, "auto_delete": False, "arguments": {}}),
        ("queue_declare", (HEARTBEATS_QUEUE,),
         {"durable": True, "auto_delete": False,
          "arguments": {"x-queue-type": "quorum", "x-message-ttl": 30_000,
                        "x-max-length": 10_000}}),
        ("queue_bind", (HEARTBEATS_QUEUE, HEARTBEATS_EXCHANGE, "#"), {}),
    ]


# -- metrics -----------------------------------------------------------------------------------

FAMILIES = {
    "gridflow_events_handled": "counter",
    "gridflow_handler_seconds": "histogram",
    "gridflow_dead_letters": "counter",
    "gridflow_outbox_backlog": "gauge",
    "gridflow_outbox_published": "counter",
    "gridflow_clocks_due": "gauge",
    "gridflow_http_requests": "counter",
    "gridflow_http_request_seconds": "histogram",
}


def families() -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def sample(name: str, **labels: str) -> float:
    for family in families().values():
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_the_page_holds_every_family_with_its_type() -> None:
    found = families()
    for name, kind in FAMILIES.items():
        assert name in found, name
        assert found[name].type == kind, name
    assert "process_resident_memory_bytes" in found


def test_the_content_type_is_prometheus_text_0_0_4() -> None:
    assert metrics.CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_recording_moves_the_counters() -> None:
    labels = {"service": "unit", "queue": "gridflow.unit", "event": "case.reported"}
    before = sample("gridflow_events_handled_total", **labels, outcome="ok")
    metrics.events_settled("unit", "gridflow.unit", ["case.reported", "case.reported"], "ok")
    assert sample("gridflow_events_handled_total", **labels, outcome="ok") == before + 2

    metrics.dead_lettered("unit", "gridflow.unit")
    assert sample("gridflow_dead_letters_total", service="unit", queue="gridflow.unit") >= 1

    metrics.handler_ran("unit", ["case.reported", "case.whistled", "case.reported"], 0.003)
    assert sample("gridflow_handler_seconds_count", service="unit", event="case.reported") >= 1
    assert sample("gridflow_handler_seconds_bucket", service="unit", event="case.whistled",
                  le="0.005") >= 1
    assert sample("gridflow_handler_seconds_bucket", service="unit", event="case.whistled",
                  le="0.001") == 0

    metrics.http_answered("unit", "GET", "/api/v1/cases/<case_id>", 404, 0.02)
    assert sample("gridflow_http_requests_total", service="unit", method="GET",
                  route="/api/v1/cases/<case_id>", status="404") >= 1


def test_buckets_span_a_millisecond_to_ten_seconds() -> None:
    assert metrics.LATENCY_BUCKETS[0] == 0.001 and metrics.LATENCY_BUCKETS[-1] == 10.0


@pytest.mark.parametrize("record", [
    lambda: metrics.http_answered("unit", "GET", "/x", 200, "slow"),
    lambda: metrics.handler_ran("unit", ["case.reported"], None),
    lambda: metrics.outbox_published("unit", -1),  # a counter only goes up
])
def test_a_metric_that_cannot_be_recorded_does_not_raise(record: Any, caplog: Any) -> None:
    record()
    assert "metric not recorded" in caplog.text


def test_the_relay_labels_its_counter_with_its_publishers_service() -> None:
    class Publisher:
        app_id = "gridflow.notify"

    assert OutboxRelay(None, None, Publisher(), hold_claims=False).service == "notify"  # type: ignore[arg-type]
    assert OutboxRelay(None, None, None, hold_claims=False).service == "unknown"  # type: ignore[arg-type]
    assert OutboxRelay(None, None, None, hold_claims=False,  # type: ignore[arg-type]
                       service="intake").service == "intake"


def test_observed_serves_metrics_and_beats() -> None:
    from shared.extensions.heartbeat import Heartbeat
    from shared.extensions.http import JsonHttpHandler

    assert isinstance(Observed.heartbeat, Heartbeat)
    entrypoints = Observed.metrics_page.nameko_entrypoints  # type: ignore[attr-defined]
    (ep,) = entrypoints
    assert isinstance(ep, JsonHttpHandler) and (ep.method, ep.url) == ("GET", "/metrics")


def test_timezones_other_than_utc_are_kept_aware() -> None:
    beijing = timezone(timedelta(hours=8))
    beat = decode_heartbeat(raw(sent_at="2026-11-23T09:00:02+08:00"))
    assert beat["sent_at"] == datetime(2026, 11, 23, 9, 0, 2, tzinfo=beijing)
