"""What departments and grid tiers are sent on the public exchange ``gridflow.dispatch``.

Pure domain code. A message goes to a *recipient*: a department (routing key
``<department>.<type>``, queue ``dispatch.<department>``) or the owner of a grid node
(routing key ``tier.<tier>.<node code>.<type>``, queue ``dispatch.tier.<tier>``).

A public message's id is derived from the event that caused it, the recipient and the
type (UUIDv5), so handling the same event twice yields the same message id and the
recipient's consumer can drop the copy.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.amqp.topology import dispatch_routing_key, tier_recipient

_NAMESPACE = uuid.UUID("5f0c4f52-4e0b-4c36-9a57-6f1d1c1f7a10")


@dataclass(frozen=True)
class Outgoing:
    """One public message: its type, who gets it (``key``) and its payload."""

    type: str
    key: str  # the department code, or tier.<tier>.<node code>
    payload: dict[str, Any]

    @property
    def routing_key(self) -> str:
        return f"{self.key}.{self.type}"


def message_id(source_event_id: str, recipient: str, event_type: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{source_event_id}/{recipient}/{event_type}"))


def links(public_url: str, case_id: str, department: str | None = None) -> dict[str, str]:
    base = f"{public_url}/api/v1/cases/{case_id}"
    if department is None:
        return {"case": base}
    return {
        "case": base,
        "ack": f"{base}/assignments/{department}/ack",
        "resolve": f"{base}/assignments/{department}/resolve",
    }


def routing_key(department: str, event_type: str) -> str:
    return dispatch_routing_key(department, event_type)


def _tier_key(tier: Mapping[str, Any]) -> str:
    return tier_recipient(tier["tier"], tier["code"])


def public_case(case: dict[str, Any] | None) -> dict[str, Any] | None:
    """The case as departments and grid tiers see it: the reporter's own feedback webhook
    (which may carry a token) stays inside gridflow."""
    if not case or not (case.get("reporter") or {}).get("webhook_url"):
        return case
    return {**case, "reporter": {**case["reporter"], "webhook_url": None}}


def _to_department(type_: str, dept: str, body: dict[str, Any], public_url: str,
                   case_id: str) -> Outgoing:
    return Outgoing(type_, dept, {
        "department": dept,
        "recipient": {"kind": "department", "department": dept},
        **body,
        "case": public_case(body.get("case")),
        "links": links(public_url, case_id, dept),
    })


def _to_tier(type_: str, tier: Mapping[str, Any], body: dict[str, Any], public_url: str,
             case_id: str) -> Outgoing:
    return Outgoing(type_, _tier_key(tier), {
        "department": None,
        "recipient": {"kind": "tier", "tier": dict(tier)},
        **body,
        "case": public_case(body.get("case")),
        "links": links(public_url, case_id),
    })


def assignment_messages(
    routed: dict[str, Any], public_url: str, case_id: str, whistle: dict[str, Any] | None = None
) -> list[Outgoing]:
    """One ``case.assigned`` per assignment of a routed case (or of a whistle's summons)."""
    return [
        Outgoing("case.assigned", a["department"], {
            "department": a["department"],
            "assignment": a,
            "tier": routed["tier"],
            "case": public_case(routed["case"]),
            "whistle": whistle,
            "links": links(public_url, case_id, a["department"]),
        })
        for a in routed["assignments"]
    ]


def summons_messages(added: dict[str, Any], tier: dict[str, Any], public_url: str,
                     case_id: str) -> list[Outgoing]:
    """A whistle: the summoned departments get their assignment; those already on the case
    and, for a hard case, the leadership it is raised to get a ``case.whistled``."""
    whistle = {"level": added["level"], "by": added["by"], "note": added["note"]}
    tier = added.get("raise_to") or tier
    out = assignment_messages({**added, "tier": tier}, public_url, case_id, whistle)
    body = {"whistle": whistle, "departments": [a["department"] for a in added["assignments"]]
            + list(added["already"]), "case": added["case"]}
    out += [_to_department("case.whistled", d, body, public_url, case_id)
            for d in added["already"]]
    if added.get("raise_to"):
        out.append(_to_tier("case.whistled", {**added["raise_to"], "role": "owner"}, body,
                            public_url, case_id))
    return out


def notice_messages(
    type_: str, field: str, notice: dict[str, Any], case: dict[str, Any] | None,
    public_url: str, case_id: str,
) -> list[Outgoing]:
    """``case.escalated`` / ``case.reminded``: one message per department and per grid
    node the notice's ``notify`` names."""
    body = {field: notice, "case": case}
    targets = notice["notify"]
    return [
        *(_to_department(type_, d, body, public_url, case_id) for d in targets["departments"]),
        *(_to_tier(type_, t, body, public_url, case_id) for t in targets["tiers"]),
    ]


def added_messages(added: dict[str, Any], tier: dict[str, Any], public_url: str,
                   case_id: str) -> list[Outgoing]:
    """Departments added after routing: a whistle's summons (see ``summons_messages``);
    otherwise (协同, a reroute after a return, a manual dispatch) a plain ``case.assigned``
    to each new department, at the case's tier."""
    if added["reason"] == "whistle":
        return summons_messages(added, tier, public_url, case_id)
    return assignment_messages({**added, "tier": tier}, public_url, case_id)


# -- the lead department ------------------------------------------------------------------------
def lead_of(assignments: list[dict[str, Any]]) -> str | None:
    return next((a["department"] for a in assignments if a["role"] == "lead"), None)


def lead_after(current: str | None, added: dict[str, Any]) -> str | None:
    """The lead once ``assignments.added`` is applied: a reroute or a manual dispatch whose
    new assignment leads replaces it; a whistle or an assist never does."""
    if added["reason"] in ("reroute", "manual"):
        return lead_of(added["assignments"]) or current
    return current


# -- progress, tasks, manual dispatch -----------------------------------------------------------
def progress_messages(progress: dict[str, Any], lead: str | None, case: dict[str, Any] | None,
                      public_url: str, case_id: str) -> list[Outgoing]:
    """进展 of a department goes to the case's lead department, unless it is the lead's own."""
    if lead is None or progress["department"] == lead:
        return []
    return [_to_department("case.progress", lead, {"progress": progress, "case": case},
                           public_url, case_id)]


def rework_messages(reopened: dict[str, Any], case: dict[str, Any] | None, public_url: str,
                    case_id: str) -> list[Outgoing]:
    """返工: the department works its assignment again (report in again, new deadlines)."""
    return [_to_department("case.reworked", reopened["department"],
                           {"rework": reopened, "case": case}, public_url, case_id)]


def task_messages(created: dict[str, Any], public_url: str, case_id: str) -> list[Outgoing]:
    """A grid worker's task (核查, 回访) goes to the owner of the node it is assigned to."""
    task = created["task"]
    return [_to_tier("task.assigned", {**task["assignee"], "role": "owner"},
                     {"task": task, "case": created["case"]}, public_url, case_id)]


def needs_dispatch_messages(data: dict[str, Any], public_url: str,
                            case_id: str) -> list[Outgoing]:
    """A returned assignment with no candidate left: the tier's owner dispatches by hand."""
    return [_to_tier("case.needs_dispatch", {**data["tier"], "role": "owner"}, {
        "returned": data["returned"], "reason": data["reason"], "case": data["case"],
    }, public_url, case_id)]
