"""Poison for every queue, and what became of it: the dead-letter queues' contents."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pika
import requests

from shared.amqp import topology as topo
from shared.events import make_event
from shared.reference import ReferenceData

AUTH = ("guest", "guest")
POISON_KINDS = ("malformed_json", "wrong_schema_version", "unknown_type", "impossible_values")


def poison_messages(
    queue: str, ref: ReferenceData, round_no: int
) -> list[tuple[str, str, bytes, pika.BasicProperties, str]]:
    """Poison of every kind for ``queue``: (exchange, routing key, body, properties, id)."""
    out = []
    for kind in POISON_KINDS:
        message_id = f"poison-{round_no}-{kind}-{queue}"
        exchange, key, body = "", queue, _poison_body(queue, kind, ref)
        if queue == topo.RESPONSES_QUEUE:
            exchange = topo.RESPONSES_EXCHANGE
            key = "fire.teleport" if kind == "unknown_type" else "fire.ack"
        props = pika.BasicProperties(
            message_id=message_id, delivery_mode=2, content_type="application/json",
            type="case.routed", headers={"schema_version": 1},
        )
        out.append((exchange, key, body, props, message_id))
    return out


def _poison_body(queue: str, kind: str, ref: ReferenceData) -> bytes:
    if kind == "malformed_json":
        return b'{"type": "case.routed", "data": {"case": '
    if queue == topo.RESPONSES_QUEUE:
        if kind == "wrong_schema_version":
            return json.dumps({"case_id": "19700101-000001", "schema_version": 99}).encode()
        # an ack for a case that never existed (unknown_type: the routing key's action)
        return json.dumps({"case_id": "19700101-000001", "note": "到场"}).encode()
    event = _valid_event_for(queue, ref)
    envelope = json.loads(event.to_json())
    if kind == "wrong_schema_version":
        envelope["schema_version"] = 99
    elif kind == "unknown_type":
        envelope["type"] = "case.teleported"
    elif kind == "impossible_values":
        envelope = json.loads(_impossible_event_for(queue, ref).to_json())
    return json.dumps(envelope, ensure_ascii=False).encode()


def _summary(ref: ReferenceData, category: str = "E0402") -> dict[str, Any]:
    from services.intake.reports import ReportBody, summarise

    cell = next(c for c in ref.grid.cells if c.polygon)
    body = ReportBody().load({
        "report_id": "poison", "category": category, "grid_code": cell.code,
        "description": "poison", "reporter": {"kind": "resident", "id": "r-0"},
    })
    return summarise(body, ref, datetime.now(UTC))


def _routed(ref: ReferenceData, case_id: str, department: str | None = None) -> Any:
    from services.routing.rules import route_with

    payload = route_with(ref, _summary(ref), datetime.now(UTC))
    if department:
        for a in payload["assignments"]:
            a["department"] = department
    return make_event("case.routed", case_id, payload, producer="chaos", at=datetime.now(UTC))


def _valid_event_for(queue: str, ref: ReferenceData) -> Any:
    """A well-formed event of a type ``queue`` takes (public for dispatch queues)."""
    if queue.startswith("dispatch."):
        return _impossible_event_for(queue, ref)
    if queue == topo.service_queue("routing"):
        return make_event("case.reported", "19700101-000001",
                          {"report_id": "poison", "case": _summary(ref)},
                          producer="chaos", at=datetime.now(UTC))
    return _routed(ref, "19700101-000001")


def _impossible_event_for(queue: str, ref: ReferenceData) -> Any:
    """The right shape with values that cannot be: an unknown category for routing, a case
    nobody reported for intake, a department not in the catalogue for escalation and
    notify, a message meant for someone else on a public queue."""
    case_id = "19700101-000001"
    if queue == topo.service_queue("routing"):
        summary = {**_summary(ref), "category": "X9999"}
        return make_event("case.reported", case_id, {"report_id": "poison", "case": summary},
                          producer="chaos", at=datetime.now(UTC))
    if queue == topo.service_queue("intake"):
        return _routed(ref, case_id)
    if queue.startswith("dispatch."):
        routed = _routed(ref, case_id).data
        wrong = "nobody" if queue.startswith("dispatch.tier.") else "someone_else"
        return make_event("case.assigned", case_id, {
            "department": wrong, "assignment": routed["assignments"][0],
            "tier": routed["tier"], "case": routed["case"],
        }, producer="chaos", at=datetime.now(UTC), public=True)
    return _routed(ref, case_id, department="no_such_department")


def work_queues(ref: ReferenceData) -> list[str]:
    """Every queue something consumes: the services', the responses', the public ones."""
    return [
        *(topo.service_queue(s) for s in topo.SUBSCRIPTIONS),
        topo.RESPONSES_QUEUE,
        *(topo.dispatch_queue(d) for d in sorted(ref.catalogue.departments)),
        *(topo.tier_queue(t) for t in topo.DISPATCH_TIERS),
    ]


def dead_letters(api: str, vhost: str, queue: str) -> list[dict[str, Any]]:
    """Every message in ``queue``'s DLQ, left there (read through the management API)."""
    r = requests.post(
        f"{api}/api/queues/{vhost}/{topo.dead_letter_queue(queue)}/get", auth=AUTH,
        timeout=30, json={"count": 100_000, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )
    r.raise_for_status()
    return r.json()


def dead_letter_reason(message: dict[str, Any]) -> str:
    headers = (message.get("properties") or {}).get("headers") or {}
    if headers.get(topo.H_REASON):
        return str(headers[topo.H_REASON])
    deaths = headers.get("x-death") or []
    return str(deaths[0].get("reason", "")) if deaths else ""
