"""The closed loop on the case aggregate (登记在册—汇总梳理—分级分类处理—反馈—群众评议打分):
协同 and manual dispatch, returns (退单), progress (进展), verification on site (核查结案),
rating (评议) and follow-up visits (回访), duplicates.

Pure domain code, mixed into ``cases.Case``. The shell resolves what needs the grid or
the catalogue (the cell's grid worker, whether a category may be reopened) and passes it in.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .model import Assignment, AssignmentState, CaseCore, CaseState, TransitionError, plain, who

RETURN_LABELS = {
    "not_our_responsibility": "不属本部门职责",
    "wrong_location": "地点有误",
    "duplicate": "重复案件",
    "needs_other_department": "需其他部门处理",
    "cannot_handle": "无法处置",
    "other": "其他",
}
UNSATISFIED_SCORE = 2  # a rating of 2 or less reopens the case (where its category allows)


class Task:
    """A grid worker's task on a case: verify on site (核查) or call back (回访)."""

    OPEN, DONE = "open", "done"

    def __init__(self, case_id: str, kind: str, assignee: dict[str, Any], at: datetime,
                 due_at: datetime | None = None) -> None:
        self.case_id = case_id
        self.kind = kind
        self.assignee_code = assignee["code"]
        self.assignee = dict(assignee)
        self.state = Task.OPEN
        self.created_at = at
        self.due_at = due_at
        self.done_at: datetime | None = None
        self.result: dict[str, Any] = {}

    @property
    def id(self) -> int:
        return int(self._pk)  # type: ignore[attr-defined]  # mapped by the store


class ClosedLoop(CaseCore):
    """Methods of ``Case`` for coordinated disposal and the loop back to the reporter."""

    tasks: list[Task]
    followers: list[dict[str, Any]]
    duplicate_of: str | None
    awaiting_dispatch: str
    closed_at: datetime | None
    rate_until: datetime | None
    ratings: list[dict[str, Any]]

    def _default_rework(self) -> list[str]:
        """Who works again when nobody is named: the lead, else every department on it."""
        lead = self.lead()
        return [lead.department] if lead else [a.department for a in self.assignments
                                                 if a.active]

    # -- 协同 and manual dispatch --------------------------------------------------------------
    def lead(self) -> Assignment | None:
        return next((a for a in self.assignments if a.active and a.role == "lead"), None)

    def request_department(self, department: str, *, role: str, requested_by: str,
                           by_department: str | None, note: str, at: datetime) -> None:
        """Ask a department onto the case. ``by_department`` is set when a department asks
        (only the lead may: 协同); otherwise an operator of the case's node asks (checked by
        the caller), who may also dispatch a new lead by hand."""
        self._require_open()
        a = self.assignment(department)
        if a is not None and a.active:
            raise TransitionError(f"{department} is already on the case as {a.role}")
        lead = self.lead()
        if by_department is not None:
            if lead is None or lead.department != by_department:
                raise TransitionError(f"only the lead department asks for assistance; "
                                      f"{by_department} is not the lead")
            if role != "assist":
                raise TransitionError("the lead asks for assisting departments only")
        if role == "lead" and lead is not None:
            raise TransitionError(f"the case has a lead ({lead.department})")
        kind = "assist" if role == "assist" else "manual"
        self.record(at, "department_requested", actor=requested_by,
                    reason=f"{department} asked to {'assist' if kind == 'assist' else 'lead'}"
                    + (f": {note}" if note else ""),
                    data={"department": department, "role": role})
        self.pending_events.append(("assignment.requested", {
            "department": department, "role": role, "kind": kind,
            "requested_by": requested_by, "note": note, "at": at,
        }))

    def added(self, data: dict[str, Any], at: datetime) -> None:
        """Departments routing added (a whistle, 协同, a re-route, a manual dispatch)."""
        for a in data["assignments"]:
            have = self.assignment(a["department"])
            if have is None:
                self.assignments.append(
                    Assignment(a["department"], a["role"], a["report_in_due"], a["resolve_due"])
                )
            elif not have.active:  # a department that returned it earlier, back by hand
                have.role, have.state = a["role"], AssignmentState.PENDING
                have.report_in_due, have.resolve_due = a["report_in_due"], a["resolve_due"]
                have.first_report_in_due, have.resolve_missed = a["report_in_due"], False
                have.acknowledged_at = have.resolved_at = None
        if data["assignments"]:
            self.awaiting_dispatch = ""
        names = ", ".join(a["department"] for a in data["assignments"]) or "nobody new"
        reason = data["reason"]
        if reason == "whistle":
            kind, text = "summoned", (
                f"{data['level']} whistle: {names} summoned"
                + (f"; {', '.join(data['already'])} already on the case"
                   if data["already"] else ""))
        elif reason == "reroute":
            kind, text = "rerouted", f"{names} takes over from {data['replaces']}"
        elif reason == "assist":
            kind, text = "assist_added", f"{names} assists"
        else:
            kind, text = "dispatched_by_hand", f"{names} dispatched by {data['requested_by']}"
        self.record(at, kind, actor="routing", reason=text + (
            f" ({data['note']})" if data.get("note") and reason != "whistle" else ""),
            data=plain({k: data.get(k) for k in
                        ("reason", "assignments", "already", "raise_to", "replaces")}))
        self._derive_state()

    # -- returns (退单) ------------------------------------------------------------------------
    def return_assignment(self, department: str, *, reason_code: str, note: str, actor: str,
                          at: datetime) -> None:
        a = self._own_assignment(department)  # refuses one already returned
        if a.state == AssignmentState.RESOLVED:
            raise TransitionError(f"assignment of {department} is {a.state}; "
                                  "only open work can be returned")
        role = a.role
        a.state, a.return_code, a.return_note = AssignmentState.RETURNED, reason_code, note
        a.paused_at, a.pause_reason = None, ""
        self.record(at, "returned", actor=actor or department,
                    reason=f"{department} returned it: {RETURN_LABELS[reason_code]}"
                    + (f" — {note}" if note else ""),
                    data={"department": department, "reason_code": reason_code, "role": role})
        self.pending_events.append(("assignment.returned", {
            "department": department, "role": role, "reason_code": reason_code, "note": note,
            "actor": actor, "at": at,
        }))
        self._derive_state()
        if self.state == CaseState.RESOLVED:  # the rest is done, but the returned part is not
            self.state = CaseState.RETURNED

    def needs_dispatch(self, data: dict[str, Any], at: datetime) -> None:
        self.awaiting_dispatch = data["reason"]
        self.record(at, "needs_dispatch", actor="routing",
                    reason=f"on {data['tier'].get('name') or data['tier']['code']}'s "
                    f"manual-dispatch queue: {data['reason']}", data=plain({"tier": data["tier"]}))

    # -- progress (进展) -----------------------------------------------------------------------
    def progress(self, department: str, *, note: str, media_urls: list[str], actor: str,
                 at: datetime) -> None:
        a = self._own_assignment(department)
        if a.state != AssignmentState.ACKNOWLEDGED:
            raise TransitionError(f"assignment of {department} is {a.state}; progress is "
                                  "reported between report-in and resolve")
        self.record(at, "progress", actor=actor or department, reason=f"{department}: {note}",
                    data={"department": department, "media_urls": list(media_urls)})
        self.pending_events.append(("assignment.progressed", {
            "department": department, "note": note, "media_urls": list(media_urls),
            "actor": actor, "at": at,
        }))

    # -- tasks for the grid worker -------------------------------------------------------------
    def open_task(self, kind: str, assignee: dict[str, Any], at: datetime,
                  due_at: datetime | None = None) -> Task:
        task = Task(self.case_id, kind, assignee, at, due_at)
        self.tasks.append(task)
        self.record(at, f"{kind}_task", actor="intake",
                    reason=f"{assignee.get('owner', {}).get('name') or assignee['code']} "
                    f"({assignee.get('name', '')}) is to {_TASK_WORDS[kind]}",
                    data={"assignee": assignee["code"]})
        return task

    def task(self, kind: str) -> Task | None:
        """The open task of this kind, if any."""
        return next((t for t in self.tasks if t.kind == kind and t.state == Task.OPEN), None)

    # -- verification (核查结案) -------------------------------------------------------------
    def verify(self, *, passed: bool, by: dict[str, Any], cell_code: str, note: str,
               media_urls: list[str], rework: list[str], at: datetime,
               rating_window: timedelta, follow_up_after: timedelta) -> None:
        """The cell's grid worker checks the work: pass (a photo) closes the case; fail (a
        reason and photos) sends the named departments (default: the lead) back to work."""
        if self.state != CaseState.RESOLVED:
            raise TransitionError(f"case {self.case_id} is {self.state}; it is verified once "
                                  "every department has resolved its part")
        if by.get("code") != cell_code:
            raise TransitionError(f"the grid worker of cell {cell_code} verifies this case, "
                                  f"not {by['tier']} {by.get('code') or '(no code)'}")
        if not media_urls:
            raise TransitionError("a verification needs at least one photo (media_urls)")
        task = self.task("verification")
        if passed:
            self.closed_at, self.rate_until = at, at + rating_window
            self.state = CaseState.CLOSED
            self.record(at, "verified", actor=who(by), reason="passed on site"
                        + (f": {note}" if note else ""), data={"media_urls": list(media_urls)})
            self.record(at, "closed", actor=who(by), reason="结案: verified on site")
            self.pending_events.append(("case.verified", {
                "passed": True, "by": by, "note": note, "media_urls": list(media_urls),
                "rework": [], "at": at}))
            self.pending_events.append(("case.closed", {
                "closed_at": at, "rate_until": self.rate_until,
                "follow_up_at": at + follow_up_after, "grid_code": self.grid_code}))
        else:
            if not note.strip():
                raise TransitionError("a failed verification says why (note)")
            departments = rework or self._default_rework()
            unknown = [d for d in departments
                       if (a := self.assignment(d)) is None or a.state != AssignmentState.RESOLVED]
            if unknown:
                raise TransitionError(f"not resolved on this case: {', '.join(unknown)}")
            self.record(at, "verification_failed", actor=who(by), reason=note,
                        data={"media_urls": list(media_urls), "rework": departments})
            self.pending_events.append(("case.verified", {
                "passed": False, "by": by, "note": note, "media_urls": list(media_urls),
                "rework": departments, "at": at}))
            self._reopen_for(departments, "verification", note, who(by), at)
        if task is not None:
            task.state, task.done_at = Task.DONE, at
            task.result = {"passed": passed, "note": note, "by": dict(by)}

    # -- rating (评议打分) -------------------------------------------------------------------
    def rate(self, *, score: int, fixed: bool | None, comment: str, reporter_id: str,
             may_reopen: bool, at: datetime) -> bool:
        """A reporter (the case's own, or a duplicate's who follows it) rates the closed
        case, once each; returns whether the rating reopened it."""
        if self.state != CaseState.CLOSED or self.rate_until is None:
            raise TransitionError(f"case {self.case_id} is {self.state}; a rating follows "
                                  "closing")
        if at > self.rate_until:
            raise TransitionError(f"the rating window closed at {self.rate_until:%Y-%m-%d %H:%M}Z")
        rater = reporter_id or self.reporter.get("id") or ""
        known = {self.reporter.get("id") or "", *(f["reporter"].get("id") or ""
                                                   for f in self.followers)}
        if rater not in known:
            raise TransitionError(f"{rater} did not report this case")
        if any(r["reporter_id"] == rater for r in self.ratings):
            raise TransitionError(f"{rater or 'the reporter'} rated this case already")
        unsatisfied = score <= UNSATISFIED_SCORE or fixed is False
        reopens = unsatisfied and may_reopen
        self.ratings = [*self.ratings, {"score": score, "fixed": fixed, "comment": comment,
                                        "reporter_id": rater, "at": at.isoformat()}]
        self.record(at, "rated", actor=f"reporter:{rater}".rstrip(":"),
                    reason=f"{score}/5" + ("" if fixed is None else
                                           (", fixed" if fixed else ", not fixed"))
                    + (f": {comment}" if comment else "")
                    + ("" if not unsatisfied else
                       ("; reopened" if reopens else "; its category is not reopened")),
                    data={"score": score, "fixed": fixed})
        self.pending_events.append(("case.rated", {
            "score": score, "fixed": fixed, "comment": comment, "reopens": reopens, "at": at}))
        if reopens:
            self._reopen_for(self._default_rework(), "rating", f"reporter unsatisfied ({score}/5)"
                             + (f": {comment}" if comment else ""), f"reporter:{rater}", at)
        return reopens

    def follow_up_due(self, assignee: dict[str, Any], at: datetime) -> Task | None:
        if self.task("follow_up") is not None or self.state != CaseState.CLOSED:
            return None
        return self.open_task("follow_up", assignee, at)

    def finish_task(self, task: Task, *, by: dict[str, Any], note: str, at: datetime) -> None:
        if task.state != Task.OPEN:
            raise TransitionError(f"task {task.id} is {task.state}")
        if task.kind == "verification":
            raise TransitionError("a verification task is done by POST …/verification")
        if by.get("code") != task.assignee_code:
            raise TransitionError(f"task {task.id} is for {task.assignee_code}")
        task.state, task.done_at, task.result = Task.DONE, at, {"note": note, "by": dict(by)}
        self.record(at, "followed_up", actor=who(by), reason=note or "回访 done")

    def _reopen_for(self, departments: list[str], cause: str, reason: str, actor: str,
                    at: datetime) -> None:
        """A resolved or closed case goes back to work for these departments."""
        if self.state == CaseState.CLOSED:
            self.state = CaseState.RESOLVED  # derived from the assignments again
        self.closed_at = None
        for d in departments:
            self._rework(d, reason, actor, at)
        self.pending_events.append(("case.reopened", {
            "cause": cause, "reason": reason, "departments": departments, "at": at}))

    # -- duplicates ------------------------------------------------------------------------
    def mark_duplicate(self, original_id: str, distance_m: float, at: datetime) -> None:
        self.state, self.duplicate_of = CaseState.DUPLICATE, original_id
        self.record(at, "duplicate", actor="intake",
                    reason=f"same category {distance_m:.0f} m from open case {original_id}; "
                    "the reporter follows that case", data={"duplicate_of": original_id})

    def attach(self, duplicate_id: str, reporter: dict[str, Any], report_id: str,
               at: datetime) -> None:
        self.followers = [*self.followers, {"case_id": duplicate_id, "report_id": report_id,
                                            "reporter": reporter, "at": at.isoformat()}]
        self.record(at, "duplicate_attached", actor="intake",
                    reason=f"duplicate report {duplicate_id} attached; its reporter follows",
                    data={"duplicate_case_id": duplicate_id})
        self.pending_events.append(("reporter.attached", {
            "reporter": reporter, "report_id": report_id, "duplicate_case_id": duplicate_id,
            "at": at}))

    def detach(self, duplicate_id: str, at: datetime, actor: str) -> dict[str, Any]:
        follower = next((f for f in self.followers if f["case_id"] == duplicate_id), None)
        if follower is None:
            raise TransitionError(f"{duplicate_id} is not attached to {self.case_id}")
        self.followers = [f for f in self.followers if f["case_id"] != duplicate_id]
        self.record(at, "duplicate_detached", actor=actor,
                    reason=f"{duplicate_id} un-linked: a case of its own",
                    data={"duplicate_case_id": duplicate_id})
        self.pending_events.append(("reporter.detached", {
            "reporter": follower["reporter"], "duplicate_case_id": duplicate_id, "at": at}))
        return follower

    def unlink(self, *, actor: str, reason: str, at: datetime) -> None:
        if self.state != CaseState.DUPLICATE:
            raise TransitionError(f"case {self.case_id} is not a duplicate")
        original, self.duplicate_of = self.duplicate_of, None
        self.state = CaseState.REPORTED
        self.record(at, "unlinked", actor=actor,
                    reason=f"not a duplicate of {original}: {reason}")


_TASK_WORDS = {"verification": "verify the work on site (核查)",
               "follow_up": "visit the reporter again (回访)"}
