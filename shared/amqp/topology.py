"""Every exchange and queue gridflow uses, declared in one place.

Internal events travel on the topic exchange ``gridflow.events`` (routing key = event
type) into one quorum queue per consuming service. Departments read the public topic
exchange ``gridflow.dispatch`` through ``dispatch.<department>`` (bound to
``<department>.#``); grid tiers (their owners and supervisors) through
``dispatch.tier.<tier>`` (bound to ``tier.<tier>.#``). Every work queue dead-letters into
``<queue>.dlq`` through the direct exchange ``gridflow.dlx``; retries wait in
``gridflow.retry.<delay>`` queues whose expired messages fall back, by the default
exchange, into the queue they came from.
Departments answer (ack, progress, resolve, return) on the topic exchange
``gridflow.responses`` with routing key ``<department>.<action>``, into the quorum queue
``gridflow.responses`` that intake consumes.
Messages nobody is bound for go to an alternate exchange and are kept, never dropped.
Every service process beats on the topic exchange ``gridflow.heartbeats`` (routing key
``<service>.<instance>``) into the quorum queue ``gridflow.heartbeats`` that the monitor
reads; heartbeats are transient and short-lived, never dead-lettered (the next one replaces
a lost one).

Every service declares the whole topology at start (declarations are idempotent), so a
message published before its consumer first ran is queued, not lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

EVENTS_EXCHANGE = "gridflow.events"
DISPATCH_EXCHANGE = "gridflow.dispatch"
RESPONSES_EXCHANGE = "gridflow.responses"  # departments answer: <department>.<action>
RESPONSES_QUEUE = "gridflow.responses"
DLX = "gridflow.dlx"
UNROUTED_EXCHANGE = "gridflow.unrouted"
UNROUTED_QUEUE = "gridflow.unrouted"
HEARTBEATS_EXCHANGE = "gridflow.heartbeats"  # every service process: <service>.<instance>
HEARTBEATS_QUEUE = "gridflow.heartbeats"  # what the monitor reads
RETRY_DELAYS_S: tuple[int, ...] = (1, 5, 30, 120, 600)
DELIVERY_LIMIT = 20  # crash-loop guard: a message that kills its consumer this often is parked

# Which internal events each service consumes. One queue per service keeps a service's
# events in one stream; handlers are written so their order does not matter.
SUBSCRIPTIONS: Mapping[str, tuple[str, ...]] = {
    "routing": ("case.reported", "case.whistled", "assignment.requested", "assignment.returned"),
    "escalation": (
        "case.routed", "assignments.added", "assignment.acknowledged", "assignment.resolved",
        "assignment.paused", "assignment.resumed", "assignment.reopened", "extension.decided",
        "assignment.returned", "case.closed",
    ),
    "notify": (
        "case.routed", "assignments.added", "case.escalated", "case.reminded",
        "case.tier_changed", "case.needs_dispatch", "assignment.progressed", "task.created",
        "case.resolved", "case.closed", "case.reopened", "reporter.attached",
        "reporter.detached", "assignment.reopened",
    ),
    "intake": (
        "case.routed", "assignments.added", "assignment.dispatched", "case.escalated",
        "case.reminded", "case.tier_changed", "assignment.rescheduled", "supervision.opened",
        "supervision.closed", "case.needs_dispatch", "followup.due",
    ),
}
# The grid tiers that get their own public queue, dispatch.tier.<tier>.
DISPATCH_TIERS: tuple[str, ...] = ("compound", "area", "community", "street", "district")

# Headers gridflow adds when it retries or dead-letters a message.
H_ATTEMPTS = "x-gridflow-attempts"
H_REASON = "x-gridflow-reason"
H_QUEUE = "x-gridflow-queue"
H_EXCHANGE = "x-gridflow-original-exchange"
H_ROUTING_KEY = "x-gridflow-original-routing-key"
H_FAILED_AT = "x-gridflow-failed-at"
H_SERVICE = "x-gridflow-service"


def service_queue(service: str) -> str:
    return f"gridflow.{service}"


def dispatch_queue(department: str) -> str:
    return f"dispatch.{department}"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def retry_exchange(delay_s: int) -> str:
    return f"gridflow.retry.{delay_s}s"


def retry_delay(attempt: int) -> int:
    """Seconds to wait before delivery ``attempt`` (1 = the first retry)."""
    return RETRY_DELAYS_S[min(max(attempt, 1), len(RETRY_DELAYS_S)) - 1]


def dispatch_routing_key(department: str, event_type: str) -> str:
    return f"{department}.{event_type}"


def tier_queue(tier: str) -> str:
    return f"dispatch.tier.{tier}"


def tier_recipient(tier: str, node_code: str) -> str:
    """A grid node as a recipient of public messages: ``tier.<tier>.<node code>``."""
    return f"tier.{tier}.{node_code}"


def tier_routing_key(tier: str, node_code: str, event_type: str) -> str:
    """A grid node's messages: ``tier.<tier>.<node code>.<event>``. The tier's queue takes
    them all; a node's own system can bind ``tier.<tier>.<its code>.#``."""
    return f"{tier_recipient(tier, node_code)}.{event_type}"


def heartbeat_routing_key(service: str, instance: str) -> str:
    """``<service>.<instance>``, cut to AMQP's 255 bytes."""
    return f"{service}.{instance}".encode()[:255].decode(errors="ignore")


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, object]
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)


# Heartbeats: no dead-lettering (a lost beat is replaced 2 s later), kept 30 s at most.
HEARTBEATS_QUEUE_SPEC = QueueSpec(
    HEARTBEATS_QUEUE,
    {"x-queue-type": "quorum", "x-message-ttl": 30_000, "x-max-length": 10_000},
    ((HEARTBEATS_EXCHANGE, "#"),),
)


def work_queue_arguments(queue: str) -> dict[str, object]:
    """A durable quorum queue that dead-letters at least once into ``<queue>.dlq``."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": DELIVERY_LIMIT,
    }


def queues(departments: Iterable[str]) -> list[QueueSpec]:
    """Every queue, with its arguments and bindings."""
    specs: list[QueueSpec] = []

    def work(name: str, bindings: Sequence[tuple[str, str]]) -> None:
        specs.append(QueueSpec(name, work_queue_arguments(name), tuple(bindings)))
        dlq = dead_letter_queue(name)
        specs.append(QueueSpec(dlq, {"x-queue-type": "quorum"}, ((DLX, name),)))

    for service, types in SUBSCRIPTIONS.items():
        work(service_queue(service), [(EVENTS_EXCHANGE, t) for t in types])
    for dept in sorted(departments):
        work(dispatch_queue(dept), [(DISPATCH_EXCHANGE, f"{dept}.#")])
    for tier in DISPATCH_TIERS:
        work(tier_queue(tier), [(DISPATCH_EXCHANGE, f"tier.{tier}.#")])
    work(RESPONSES_QUEUE, [(RESPONSES_EXCHANGE, "#")])
    for delay in RETRY_DELAYS_S:
        specs.append(
            QueueSpec(
                f"gridflow.retry.{delay}s",
                {
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay * 1000,
                    "x-dead-letter-exchange": "",  # back to the queue named by the routing key
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
                ((retry_exchange(delay), "#"),),
            )
        )
    specs.append(
        QueueSpec(
            UNROUTED_QUEUE,
            {"x-queue-type": "quorum", "x-max-length": 100_000, "x-message-ttl": 7 * 86_400_000},
            ((UNROUTED_EXCHANGE, ""),),
        )
    )
    specs.append(HEARTBEATS_QUEUE_SPEC)
    return specs


# (name, type, arguments)
EXCHANGES: tuple[tuple[str, str, Mapping[str, object]], ...] = (
    (UNROUTED_EXCHANGE, "fanout", {}),
    (EVENTS_EXCHANGE, "topic", {"alternate-exchange": UNROUTED_EXCHANGE}),
    (DISPATCH_EXCHANGE, "topic", {"alternate-exchange": UNROUTED_EXCHANGE}),
    (RESPONSES_EXCHANGE, "topic", {"alternate-exchange": UNROUTED_EXCHANGE}),
    (DLX, "direct", {}),
    *((retry_exchange(d), "fanout", {}) for d in RETRY_DELAYS_S),
    (HEARTBEATS_EXCHANGE, "topic", {}),  # no alternate exchange: an unread beat is dropped
)


def declare(channel: object, departments: Iterable[str]) -> None:
    """Declare every exchange, queue and binding on a py-amqp channel (idempotent)."""
    for name, kind, args in EXCHANGES:
        channel.exchange_declare(name, kind, durable=True, auto_delete=False, arguments=dict(args))
    for spec in queues(departments):
        channel.queue_declare(
            spec.name, durable=True, auto_delete=False, arguments=dict(spec.arguments)
        )
        for exchange, key in spec.bindings:
            channel.queue_bind(spec.name, exchange, key)


def declare_heartbeats(channel: object) -> None:
    """Declare the heartbeat exchange, its queue and the binding (idempotent): what a
    process that beats needs, as ``declare`` declares it."""
    channel.exchange_declare(HEARTBEATS_EXCHANGE, "topic", durable=True, auto_delete=False,
                             arguments={})
    spec = HEARTBEATS_QUEUE_SPEC
    channel.queue_declare(spec.name, durable=True, auto_delete=False,
                          arguments=dict(spec.arguments))
    for exchange, key in spec.bindings:
        channel.queue_bind(spec.name, exchange, key)
