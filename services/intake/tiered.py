"""Tiered response on the case aggregate: whistles, pauses, extensions, rework, and what
the escalation service reports back (tiers, reminders, new deadlines, the ledger).

Pure domain code, mixed into ``cases.Case``. Who may act is checked here against the
grid nodes the shell resolves (an operator names their tier and node code):

- a whistle (吹哨) comes from the community or the street the case lies in;
- an extension (延期) is decided by a tier above the case's current tier;
- a rework (返工) is ordered by an operator of the case's tier or above.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .model import AssignmentState, CaseCore, TransitionError, above, plain, who

WHISTLE_TIERS = ("community", "street")


class Extension:
    """A department's request for more time on its resolve deadline (延期)."""

    PENDING, APPROVED, REFUSED = "pending", "approved", "refused"

    def __init__(self, case_id: str, department: str, extend_by: str, reason: str,
                 requested_by: str, at: datetime) -> None:
        self.case_id = case_id
        self.department = department
        self.extend_by = extend_by
        self.reason = reason
        self.requested_by = requested_by
        self.requested_at = at
        self.state = Extension.PENDING
        self.decided_at: datetime | None = None
        self.decided_by: dict[str, Any] | None = None
        self.decision_note = ""

    @property
    def id(self) -> int:
        return int(self._pk)  # type: ignore[attr-defined]  # mapped by the store


class TieredResponse(CaseCore):
    """Methods of ``Case`` for 分级响应. Relies on Case's attributes and helpers."""

    extensions: list[Extension]

    # -- operators act ---------------------------------------------------------------------
    def whistle(self, *, level: str, departments: list[str], by: dict[str, Any],
                node_code: str, reason: str, at: datetime) -> None:
        """吹哨: the community or street summons departments. ``node_code`` is the code of
        the case's node at ``by['tier']``; the operator must speak for that node."""
        self._require_open()
        if self.tier is None:
            raise TransitionError(f"case {self.case_id} is not routed yet; whistle after routing")
        if by["tier"] not in WHISTLE_TIERS:
            raise TransitionError(
                f"a whistle comes from a community or a street, not a {by['tier']}"
            )
        self._check_node(by, node_code)
        self.record(at, "whistled", actor=who(by),
                    reason=f"{level} whistle summons {', '.join(departments)}"
                    + (f": {reason}" if reason else ""),
                    data={"level": level, "departments": departments, "by": by})
        self.pending_events.append(("case.whistled", {
            "level": level, "departments": departments, "by": by, "reason": reason,
            "whistled_at": at,
        }))

    def request_extension(self, department: str, *, extend_by: str, reason: str, actor: str,
                          at: datetime) -> Extension:
        a = self._own_assignment(department)
        if a.state == AssignmentState.RESOLVED:
            raise TransitionError(f"{department} has resolved its part; nothing to extend")
        if any(e.department == department and e.state == Extension.PENDING
               for e in self.extensions):
            raise TransitionError(f"{department} already has an extension request pending")
        ext = Extension(self.case_id, department, extend_by, reason, actor or department, at)
        self.extensions.append(ext)
        self.record(at, "extension_requested", actor=actor or department,
                    reason=f"{department} asks for {extend_by} more: {reason}",
                    data={"department": department, "extend_by": extend_by})
        return ext

    def decide_extension(self, ext: Extension, *, approved: bool, by: dict[str, Any],
                         node_code: str, note: str, at: datetime) -> None:
        """The tier above the case's tier approves or refuses (its own node, checked)."""
        self._require_open()
        if ext.state != Extension.PENDING:
            raise TransitionError(f"extension {ext.id} was already {ext.state}")
        if self.tier is None or not above(by["tier"], self.tier):
            raise TransitionError(
                f"an extension is decided by a tier above the case's tier ({self.tier}), "
                f"not by a {by['tier']}"
            )
        self._check_node(by, node_code)
        ext.state = Extension.APPROVED if approved else Extension.REFUSED
        ext.decided_at, ext.decided_by, ext.decision_note = at, dict(by), note
        self.record(at, f"extension_{ext.state}", actor=who(by),
                    reason=f"{ext.extend_by} for {ext.department} {ext.state}"
                    + (f": {note}" if note else ""),
                    data={"extension_id": ext.id, "department": ext.department})
        self.pending_events.append(("extension.decided", {
            "extension_id": ext.id, "department": ext.department, "approved": approved,
            "extend_by": ext.extend_by, "approver": by, "note": note, "at": at,
        }))

    def reopen(self, department: str, *, reason: str, by: dict[str, Any], node_code: str,
               at: datetime) -> None:
        """返工: a resolved assignment is worked again; its clocks restart the policy."""
        a = self.assignment(department)
        if a is None:
            raise TransitionError(f"{department} has no assignment on this case")
        if a.state != AssignmentState.RESOLVED:
            raise TransitionError(f"only a resolved assignment can be reworked; "
                                  f"{department}'s is {a.state}")
        if self.tier is not None and above(self.tier, by["tier"]):
            raise TransitionError(f"rework is ordered at the case's tier ({self.tier}) or above")
        self._check_node(by, node_code)
        if self.state in ("resolved", "closed"):
            self._reopen_for([department], "operator", reason, who(by), at)
        else:
            self._rework(department, reason, who(by), at)

    def _rework(self, department: str, reason: str, actor: str, at: datetime) -> None:
        """The assignment goes back to work: report in again, clocks restart (返工)."""
        a = self.assignment(department)
        assert a is not None
        a.state, a.resolved_at, a.acknowledged_at = AssignmentState.DISPATCHED, None, None
        a.reworks = (a.reworks or 0) + 1
        self.record(at, "reopened", actor=actor, reason=f"{department} reworks: {reason}",
                    data={"department": department, "reworks": a.reworks})
        self.pending_events.append(("assignment.reopened", {
            "department": department, "reason": reason, "at": at,
        }))
        self._derive_state()

    # -- departments pause -----------------------------------------------------------------
    def pause(self, department: str, *, reason: str, actor: str, at: datetime) -> None:
        """缓办: the clocks stop counting until ``resume``."""
        a = self._own_assignment(department)
        if a.state == AssignmentState.RESOLVED:
            raise TransitionError(f"{department} has resolved its part; nothing to pause")
        if a.paused_at is not None:
            raise TransitionError(f"{department} is paused since {a.paused_at:%Y-%m-%d %H:%M}Z")
        a.paused_at, a.pause_reason = at, reason
        self.record(at, "paused", actor=actor or department, reason=f"{department}: {reason}",
                    data={"department": department})
        self.pending_events.append(("assignment.paused", {
            "department": department, "reason": reason, "actor": actor, "at": at,
        }))

    def resume(self, department: str, *, actor: str, at: datetime) -> None:
        a = self._own_assignment(department)
        if a.paused_at is None:
            raise TransitionError(f"{department} is not paused")
        paused_for = at - a.paused_at
        a.paused_at, a.pause_reason = None, ""
        self.record(at, "resumed", actor=actor or department,
                    reason=f"{department} goes on after {_span(paused_for.total_seconds())}",
                    data={"department": department, "paused_s": paused_for.total_seconds()})
        self.pending_events.append(("assignment.resumed", {
            "department": department, "actor": actor, "at": at,
        }))

    # -- what escalation reports -----------------------------------------------------------
    def escalated(self, data: dict[str, Any], at: datetime) -> None:
        self.tier, self.tier_code = data["to_tier"]["tier"], data["to_tier"]["code"]
        self.escalations += 1
        self._new_deadlines(data["missed"])
        late = ", ".join(f"{m['department']} ({m['clock']})" for m in data["missed"])
        self.record(at, "escalated", actor="escalation",
                    reason=f"{data['reason']}: {late}; now at {data['to_tier']['tier']} "
                    f"{data['to_tier'].get('name', '')}".rstrip(),
                    data=plain(data))

    def reminded(self, data: dict[str, Any], at: datetime) -> None:
        self._new_deadlines(data["missed"])
        late = ", ".join(f"{m['department']} ({m['clock']})"
                         for m in [*data["missed"], *data["exhausted"]])
        self.record(at, "reminded", actor="escalation",
                    reason=f"{data['reason']}: {late}; stays at {data['tier']['tier']}",
                    data=plain(data))

    def tier_changed(self, data: dict[str, Any], at: datetime) -> None:
        self.tier, self.tier_code = data["to_tier"]["tier"], data["to_tier"]["code"]
        self.record(at, "tier_changed", actor="escalation",
                    reason=f"{data['from_tier']['tier']} → {data['to_tier']['tier']}: "
                    f"{data['reason']}", data=plain(data))

    def rescheduled(self, data: dict[str, Any], at: datetime) -> None:
        a = self.assignment(data["department"])
        if a is None:
            raise TransitionError(f"no assignment for {data['department']}")
        a.report_in_due, a.resolve_due = data["report_in_due"], data["resolve_due"]
        if a.acknowledged_at is None and a.report_in_due is not None:
            # a report-in still to come was moved by right (a rework's new cycle, a pause):
            # 响应率 judges it against the new deadline
            a.first_report_in_due = a.report_in_due
        self.record(at, "rescheduled", actor="escalation",
                    reason=f"{data['department']}: {data['reason']}",
                    data=plain(data))

    def supervision(self, opened: bool, items: list[dict[str, Any]], at: datetime) -> None:
        what = "on the supervision ledger (督办)" if opened else "off the supervision ledger"
        names = ", ".join(f"{i['department']} {i['kind']}" for i in items)
        self.record(at, "supervision_opened" if opened else "supervision_closed",
                    actor="escalation", reason=f"{names} {what}", data={"items": plain(items)})

    # -- helpers -----------------------------------------------------------------------------
    def _new_deadlines(self, missed: list[dict[str, Any]]) -> None:
        for m in missed:
            a = self.assignment(m["department"])
            if a is None:
                continue
            if m["clock"] == "report_in":
                a.report_in_due = m.get("next_due")
            else:
                a.resolve_due = m.get("next_due")
                a.resolve_missed = True

    def _check_node(self, by: dict[str, Any], node_code: str) -> None:
        if by.get("code") != node_code:
            raise TransitionError(
                f"{by['tier']} {by.get('code') or '(no code)'} does not answer for this case "
                f"(its {by['tier']} is {node_code})"
            )


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
