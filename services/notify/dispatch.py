"""What departments are sent: the public ``case.assigned`` and ``case.escalated`` messages.

Pure domain code. A public message's id is derived from the event that caused it and
the department (UUIDv5), so handling the same event twice yields the same message id
and the department's consumer can drop the copy.
"""

from __future__ import annotations

import uuid
from typing import Any

from shared.amqp.topology import dispatch_routing_key

_NAMESPACE = uuid.UUID("5f0c4f52-4e0b-4c36-9a57-6f1d1c1f7a10")


def message_id(source_event_id: str, department: str, event_type: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{source_event_id}/{department}/{event_type}"))


def links(public_url: str, case_id: str, department: str) -> dict[str, str]:
    base = f"{public_url}/api/v1/cases/{case_id}"
    return {
        "case": base,
        "ack": f"{base}/assignments/{department}/ack",
        "resolve": f"{base}/assignments/{department}/resolve",
    }


def assignment_messages(
    routed: dict[str, Any], public_url: str, case_id: str
) -> list[dict[str, Any]]:
    """One ``case.assigned`` payload per assignment of a routed case."""
    return [
        {
            "department": a["department"],
            "assignment": a,
            "tier": routed["tier"],
            "case": routed["case"],
            "links": links(public_url, case_id, a["department"]),
        }
        for a in routed["assignments"]
    ]


def escalation_messages(
    escalated: dict[str, Any], case: dict[str, Any] | None, public_url: str, case_id: str
) -> list[dict[str, Any]]:
    """One ``case.escalated`` payload per department concerned."""
    return [
        {
            "department": dept,
            "escalation": escalated,
            "case": case,
            "links": links(public_url, case_id, dept),
        }
        for dept in escalated["notify"]
    ]


def routing_key(department: str, event_type: str) -> str:
    return dispatch_routing_key(department, event_type)
