"""Dead letters as operators see them: what died, where, why and when, and how to replay it.

A message reaches ``<queue>.dlq`` two ways. gridflow's consumers republish it with their own
headers (``x-gridflow-reason``, ``-queue``, ``-original-exchange``, ``-original-routing-key``,
``-failed-at``); RabbitMQ dead-letters it itself (a department's system rejected it, the
delivery limit was hit) and records ``x-death``. Both are read here into one record. Plain
Python: the monitor's shell hands in headers and body, and publishes what ``replay_of`` says.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.amqp.topology import (  # names only: no broker client here
    H_ATTEMPTS,
    H_EXCHANGE,
    H_FAILED_AT,
    H_QUEUE,
    H_REASON,
    H_ROUTING_KEY,
    H_SERVICE,
)

H_REPLAYED_BY = "x-gridflow-replayed-by"
H_REPLAYED_AT = "x-gridflow-replayed-at"
H_REPLAYS = "x-gridflow-replays"
# Headers that describe a death; a replayed message starts its life afresh without them.
DEATH_HEADERS = (
    "x-death", "x-first-death-reason", "x-first-death-queue", "x-first-death-exchange",
    "x-last-death-reason", "x-last-death-queue", "x-last-death-exchange",
    H_REASON, H_QUEUE, H_FAILED_AT, H_SERVICE, H_ATTEMPTS, "x-delivery-count",
)
PARKED, REPLAYED, DISCARDED = "parked", "replayed", "discarded"
STATES = (PARKED, REPLAYED, DISCARDED)
MAX_PAYLOAD_CHARS = 64 * 1024
# What no database keeps in text (PostgreSQL: a NUL; neither: an unpaired surrogate, which
# py-amqp decodes header strings into): stored as U+FFFD, like bytes that are not UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as collected from ``dlq``."""

    key: str  # identifies this death: collecting the same message twice stores it once
    dlq: str
    queue: str  # where it died, and where a replay sends it
    exchange: str  # where it was first published
    routing_key: str
    reason: str
    service: str
    first_death_at: datetime | None
    message_id: str
    type: str
    content_type: str
    headers: dict[str, Any] = field(default_factory=dict)
    body: str = ""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return "" if value is None else _UNSTORABLE.sub("\ufffd", str(value))


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str | bytes):
        try:
            parsed = datetime.fromisoformat(_text(value))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def jsonable(value: Any) -> Any:
    """Headers as JSON can hold them (AMQP tables carry bytes and datetimes)."""
    if isinstance(value, dict):
        return {_text(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return _instant(value).isoformat()  # type: ignore[union-attr]
    if isinstance(value, bytes | str):
        return _text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return _text(value)


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death") or []
    if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict):
        return deaths[-1]  # RabbitMQ puts the most recent first; the oldest is last
    return {}


def read(dlq: str, properties: dict[str, Any], headers: dict[str, Any] | None,
         body: bytes | str) -> DeadLetter:
    """Make sense of a message taken from ``dlq``; never raises on odd input."""
    headers = jsonable(dict(headers or {}))
    death = _first_death(headers)
    keys = death.get("routing-keys") or []
    queue = (_text(headers.get(H_QUEUE)) or _text(death.get("queue"))
             or _text(headers.get("x-first-death-queue")) or dlq.removesuffix(".dlq"))
    reason = (_text(headers.get(H_REASON))
              or _text(headers.get("x-first-death-reason")) or _text(death.get("reason"))
              or "unknown")
    if H_REASON not in headers and reason in ("rejected", "delivery_limit", "expired",
                                              "maxlen"):
        reason = {
            "rejected": "rejected by its consumer (basic.reject / nack without requeue)",
            "delivery_limit": "delivered too often without an ack (crash-loop guard)",
            "expired": "expired (message TTL)",
            "maxlen": "the queue was full",
        }[reason]
    text = _text(body)
    digest = hashlib.sha256()
    for part in (dlq, json.dumps(headers, sort_keys=True, default=str), text):
        digest.update(part.encode("utf-8", "replace"))
        digest.update(b"\0")
    return DeadLetter(
        key=digest.hexdigest(),
        dlq=dlq,
        queue=queue,
        exchange=_text(headers.get(H_EXCHANGE)) or _text(death.get("exchange")),
        routing_key=_text(headers.get(H_ROUTING_KEY)) or (_text(keys[0]) if keys else ""),
        reason=reason[:1000],
        service=_text(headers.get(H_SERVICE)),
        first_death_at=_instant(headers.get(H_FAILED_AT)) or _instant(death.get("time")),
        message_id=_text(properties.get("message_id"))[:64],
        type=_text(properties.get("type"))[:100],
        content_type=_text(properties.get("content_type")) or "application/json",
        headers=headers,
        body=text[:MAX_PAYLOAD_CHARS],
    )


@dataclass(frozen=True)
class Replay:
    """What to publish to replay a dead letter: straight into the queue it died in (the
    default exchange routes by queue name), so only its own consumer sees it again, with
    a fresh retry budget."""

    exchange: str
    routing_key: str
    headers: dict[str, Any]


def replay_of(queue: str, headers: dict[str, Any], *, by: str, at: datetime) -> Replay:
    kept = {k: v for k, v in headers.items() if k not in DEATH_HEADERS}
    kept[H_REPLAYED_BY] = by
    kept[H_REPLAYED_AT] = at.isoformat()
    previous = str(headers.get(H_REPLAYS) or "0")
    kept[H_REPLAYS] = (int(previous) if previous.isdigit() else 0) + 1
    return Replay(exchange="", routing_key=queue, headers=kept)


def payload_preview(body: str, limit: int = 160) -> str:
    """One line of the payload: its event type and case if it is a gridflow event."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:limit]
    if isinstance(data, dict) and "type" in data:
        return f"{data.get('type')} {data.get('case_id', '')}".strip()[:limit]
    return body[:limit]
