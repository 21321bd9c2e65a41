"""Prometheus metrics: one registry per process, served by every service on ``GET /metrics``.

The counters and histograms move where the work happens (the consumer, the HTTP handler,
the outbox relay); the gauges are set at scrape time by the service's
``Observed.refresh_metrics`` (outbox backlog, clocks due). Several services in one process
(the tests) share the registry: every metric carries a ``service`` label.

Recording a metric never raises into the code path it observes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import ParamSpec

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

log = logging.getLogger(__name__)
P = ParamSpec("P")

# Prometheus' text exposition format, which generate_latest writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Handler outcomes. "duplicate" (an event the inbox had already seen) is not counted: the
# inbox filters inside the handler's transaction, out of the consumer's sight.
OUTCOMES = ("ok", "retried", "dead_lettered")
# An event type the queue does not know (a message that is no valid event): one label value,
# so that whatever anyone publishes cannot grow the number of series.
OTHER_EVENT = "other"
# 1 ms … 10 s: a batch's transaction and confirm round trip, a request with its queries.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

disable_created_metrics()  # no *_created series: they double the page and say little here
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, resident memory, open fds …

EVENTS_HANDLED = Counter(
    "gridflow_events_handled_total",
    "Events the service's consumers settled, by queue, event type and outcome "
    "(ok: handled and acked; retried: sent to a retry queue; dead_lettered).",
    ["service", "queue", "event", "outcome"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "gridflow_handler_seconds",
    "How long one batch of events took in its handler, by event type (a batch of several "
    "types counts once for each).",
    ["service", "event"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "gridflow_dead_letters_total",
    "Messages this process dead-lettered, by the queue they came from.",
    ["service", "queue"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "gridflow_outbox_backlog",
    "Outbox rows not yet published (read from the service's database at scrape time).",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "gridflow_outbox_published_total",
    "Outbox rows this process published and the broker confirmed.",
    ["service"],
    registry=REGISTRY,
)
CLOCKS_DUE = Gauge(
    "gridflow_clocks_due",
    "Escalation clocks due now and not fired yet (read at scrape time).",
    ["service"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "gridflow_http_requests_total",
    "HTTP requests answered, by method, route (the URL rule, not the path) and status.",
    ["service", "method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "gridflow_http_request_seconds",
    "How long an HTTP request took, by route.",
    ["service", "route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)


def render() -> bytes:
    """The registry in Prometheus' text format (CONTENT_TYPE)."""
    return generate_latest(REGISTRY)


def _safely(what: str) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Decorator: a recording function that logs instead of raising."""

    def wrap(fn: Callable[P, None]) -> Callable[P, None]:
        @functools.wraps(fn)
        def recording(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                fn(*args, **kwargs)
            except Exception:  # a metric must never break the work it measures
                log.warning("metric not recorded", extra={"metric": what}, exc_info=True)

        return recording

    return wrap


@_safely("gridflow_events_handled_total")
def events_settled(service: str, queue: str, events: Iterable[str], outcome: str) -> None:
    """One event per item of ``events`` (their types) settled with ``outcome``."""
    for event in events:
        EVENTS_HANDLED.labels(service, queue, event, outcome).inc()


@_safely("gridflow_handler_seconds")
def handler_ran(service: str, events: Iterable[str], seconds: float) -> None:
    """A batch of these event types took ``seconds`` in its handler."""
    for event in sorted(set(events)):
        HANDLER_SECONDS.labels(service, event).observe(seconds)


@_safely("gridflow_dead_letters_total")
def dead_lettered(service: str, queue: str) -> None:
    DEAD_LETTERS.labels(service, queue).inc()


@_safely("gridflow_http_requests_total")
def http_answered(service: str, method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(service, method, route, str(status)).inc()
    HTTP_SECONDS.labels(service, route).observe(seconds)


@_safely("gridflow_outbox_published_total")
def outbox_published(service: str, count: int) -> None:
    if count:
        OUTBOX_PUBLISHED.labels(service).inc(count)

DEAD_LETTERS_PARKED = Gauge(
    "gridflow_dead_letters_parked",
    "Dead letters the monitor collected that wait for an operator (replay or discard).",
    ["service"],
    registry=REGISTRY,
)
