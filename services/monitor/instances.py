"""Service instances as their heartbeats show them.

Every service process beats every ``interval_s`` (2 s by default). An instance is *down*
when it said it was stopping, or when no beat came for ``MISSES`` intervals, and never
later than ``DOWN_AFTER_MAX_S`` after its last beat: a stopped instance shows as down
within 10 s, collection delay included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

MISSES = 3
DOWN_AFTER_MAX_S = 8.0
FORGET_AFTER = timedelta(hours=24)  # a down instance leaves the list after this


@dataclass(frozen=True)
class Instance:
    instance: str
    service: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen: datetime
    interval_s: float
    state: str  # the state it last reported: up | stopping


def down_after(interval_s: float) -> timedelta:
    return timedelta(seconds=min(MISSES * max(interval_s, 0.1), DOWN_AFTER_MAX_S))


def status(i: Instance, now: datetime) -> str:
    if i.state == "stopping":
        return "down"
    return "up" if now - i.last_seen <= down_after(i.interval_s) else "down"


def view(i: Instance, now: datetime) -> dict[str, Any]:
    return {
        "instance": i.instance, "service": i.service, "host": i.host, "pid": i.pid,
        "version": i.version, "started_at": i.started_at.isoformat(),
        "last_seen": i.last_seen.isoformat(),
        "seconds_since": round((now - i.last_seen).total_seconds(), 1),
        "status": status(i, now),
    }


def summary(instances: list[Instance], now: datetime, expected: list[str]) -> dict[str, Any]:
    """Every instance, newest first within its service, and per service how many are up;
    an expected service with no instance up is listed as down."""
    rows = sorted((view(i, now) for i in instances if now - i.last_seen <= FORGET_AFTER),
                  key=lambda r: (r["service"], r["status"] != "up", r["last_seen"]),
                  reverse=False)
    services: dict[str, dict[str, int]] = {s: {"up": 0, "down": 0} for s in expected}
    for r in rows:
        services.setdefault(r["service"], {"up": 0, "down": 0})[r["status"]] += 1
    return {
        "instances": rows,
        "services": [{"service": s, **counts, "status": "up" if counts["up"] else "down"}
                     for s, counts in sorted(services.items())],
    }
