"""Queue figures and what deserves an operator's eye.

The figures come from RabbitMQ's management API when it is on, else from passive declares
(depth and consumers only). ``BacklogTracker`` keeps a short history of depths per queue,
in memory, to say whether a backlog is growing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

# What each gridflow queue is for, from its name.
WORK, DISPATCH, TIER, DEAD_LETTERS, RETRY, OTHER = (
    "service", "department", "tier", "dead letters", "retry", "other")


def kind_of(name: str) -> str:
    if name.endswith(".dlq"):
        return DEAD_LETTERS
    if name.startswith("gridflow.retry."):
        return RETRY
    if name.startswith("dispatch.tier."):
        return TIER
    if name.startswith("dispatch."):
        return DISPATCH
    if name in ("gridflow.unrouted", "gridflow.heartbeats"):
        return OTHER
    return WORK


# Queues that must have a consumer: the ones work waits in. Dead letters wait for people,
# retry queues for their TTL, department and tier queues for systems outside gridflow
# (a missing department consumer is flagged too: its cases are not being received).
NEEDS_CONSUMER = (WORK, DISPATCH, TIER)


@dataclass
class QueueStatus:
    name: str
    kind: str
    messages: int
    ready: int
    unacked: int
    consumers: int
    publish_rate: float | None = None  # messages/s, management API only
    deliver_rate: float | None = None
    growing: bool = False
    alerts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def from_management(row: Mapping[str, Any]) -> QueueStatus:
    """A row of ``GET /api/queues/<vhost>``."""
    stats = row.get("message_stats") or {}

    def rate(key: str) -> float:
        return round(float((stats.get(key) or {}).get("rate") or 0.0), 2)

    return QueueStatus(
        name=str(row["name"]),
        kind=kind_of(str(row["name"])),
        messages=int(row.get("messages") or 0),
        ready=int(row.get("messages_ready") or 0),
        unacked=int(row.get("messages_unacknowledged") or 0),
        consumers=int(row.get("consumers") or 0),
        publish_rate=rate("publish_details"),
        deliver_rate=rate("deliver_get_details"),
    )


def from_declare(name: str, messages: int, consumers: int) -> QueueStatus:
    """What a passive declare tells: ready messages and consumers."""
    return QueueStatus(name=name, kind=kind_of(name), messages=messages, ready=messages,
                       unacked=0, consumers=consumers)


class BacklogTracker:
    """Depth samples per queue; a backlog grows when the ready count rose at every one of
    the last ``window`` samples, or rose by ``jump`` or more across them."""

    def __init__(self, window: int = 4, jump: int = 50) -> None:
        self.window = window
        self.jump = jump
        self._samples: dict[str, deque[int]] = {}

    def observe(self, statuses: Iterable[QueueStatus]) -> None:
        for s in statuses:
            self._samples.setdefault(s.name, deque(maxlen=self.window)).append(s.ready)

    def growing(self, name: str) -> bool:
        samples = list(self._samples.get(name, ()))
        if len(samples) < 2 or samples[-1] == 0:
            return False
        rising = all(b > a for a, b in pairwise(samples))
        return (rising and len(samples) >= self.window) or samples[-1] - samples[0] >= self.jump


def assess(statuses: list[QueueStatus], tracker: BacklogTracker) -> list[QueueStatus]:
    """Flag queues with no consumer where one is needed, growing backlogs and dead letters.
    Growing backlogs come first, then other flagged queues with messages waiting, then the
    rest of the flagged ones, then the quiet ones, each by name."""
    for s in statuses:
        s.alerts = []
        s.growing = tracker.growing(s.name)
        if s.kind in NEEDS_CONSUMER and s.consumers == 0:
            s.alerts.append("no consumer")
        if s.growing and s.kind != RETRY:
            s.alerts.append("backlog growing")
        if s.kind == DEAD_LETTERS and s.messages:
            s.alerts.append("dead letters waiting to be collected")
    return sorted(statuses, key=lambda s: (
        0 if s.growing and s.kind != RETRY else 1 if s.alerts and s.ready else
        2 if s.alerts else 3, s.name))
