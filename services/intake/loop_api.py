"""intake's entrypoints for the closed loop: 协同 and manual dispatch, returns, progress,
verification, rating, follow-up tasks, duplicates, the public view, and departments'
answers over AMQP (``gridflow.responses``). Mixed into ``IntakeService``; the rules are in
``loop`` and ``cases``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Request

from shared import access
from shared.access import Principal
from shared.amqp.topology import H_ROUTING_KEY, RESPONSES_QUEUE
from shared.clock import utcnow
from shared.config import Settings
from shared.events import Event
from shared.extensions.consumer import event_handler
from shared.extensions.http import ApiError, NotFound, json_http, read_json
from shared.failures import PoisonEvent
from shared.responses import RESPONSE_PREFIX, decode_response

from . import answers, bodies, keys, views
from .access import load
from .cases import Case, Task, TransitionError
from .model import above, who
from .store import assignments, tasks

if TYPE_CHECKING:
    from nameko.dependency_providers import Config

    from shared.extensions.store import StoreAccess
    from shared.reference import ReferenceData
    from shared.unit_of_work import UnitOfWork

# What a department's answer does to the case, over HTTP and over AMQP alike.
DEPARTMENT_ACTIONS: dict[str, Callable[[Case, str, dict[str, Any], Any], None]] = {
    "ack": lambda c, d, b, now: c.acknowledge(d, actor=b["actor"], note=b["note"], at=now),
    "progress": lambda c, d, b, now: c.progress(d, note=b["note"], media_urls=b["media_urls"],
                                                actor=b["actor"], at=now),
    "resolve": lambda c, d, b, now: c.resolve(d, actor=b["actor"], note=b["note"],
                                              media_urls=b["media_urls"], at=now),
    "return": lambda c, d, b, now: c.return_assignment(d, reason_code=b["reason_code"],
                                                       note=b["note"], actor=b["actor"], at=now),
}


def decode_amqp_response(message: Any) -> Event:
    """A kombu message on ``gridflow.responses`` as a ``response.<action>`` event.

    A retried or replayed response comes back through the default exchange (routing key:
    the queue's name), which no department may publish to: its department and action are
    then the ones it was first published with (``x-gridflow-original-routing-key``)."""
    props = message.properties or {}
    key = (message.delivery_info or {}).get("routing_key", "")
    if key == RESPONSES_QUEUE:
        key = str((message.headers or {}).get(H_ROUTING_KEY, key))
    return decode_response(message.body, key, props.get("message_id"))


def _audit_response(session: Session, ev: Event) -> None:
    """A department's answer over AMQP in the audit log. Its department is the routing
    key's, which the broker lets only that department's user publish (topic permissions)."""
    department, action = ev.data["department"], ev.type.removeprefix(RESPONSE_PREFIX)
    keys.record(session, at=utcnow(), actor=f"department:{department}", role=access.DEPARTMENT,
                action=action, target=ev.case_id, outcome="done", via="amqp",
                source=RESPONSES_QUEUE, route=f"{department}.{action}",
                detail={"message_id": ev.event_id, "actor": ev.data.get("actor", "")})


class LoopApi:
    name: str
    db: StoreAccess
    ref: ReferenceData
    config: Config

    if TYPE_CHECKING:
        clock: Any

        access: Principal | None

        def _act(self, case_id: str, action: Callable[[Case, Any], Any], *,
                 department: str | None = None,
                 by: dict[str, Any] | None = None) -> dict[str, Any]: ...
        def _node_code(self, case: Case, tier: str) -> str: ...
        def _save(self, tx: UnitOfWork, case: Case, now: Any) -> None: ...
        def _apply(self, events: list[Event], consumer: str,
                   apply: Callable[[Case, Event, Any], None],
                   refused: type[Exception]) -> None: ...

    @property
    def settings(self) -> Settings:
        return Settings.from_config(self.config)

    # -- departments answer (HTTP) ---------------------------------------------------------
    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/progress",
               action="assignment.respond", body=bodies.ProgressBody,
               responses={200: answers.CaseView}, errors=(409,), summary="Progress (进展)")
    def progress(self, request: Request, case_id: str, department: str) -> dict[str, Any]:
        """进展: a note and media, pushed to the lead department and the reporter."""
        body = bodies.ProgressBody().load(read_json(request))
        return self._act(case_id, lambda c, now: DEPARTMENT_ACTIONS["progress"](
            c, department, body, now), department=department)

    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/return",
               action="assignment.respond", body=bodies.ReturnBody,
               responses={200: answers.CaseView}, errors=(409,),
               summary="Return the assignment (退单)")
    def return_assignment(self, request: Request, case_id: str, department: str) -> dict:
        """退单: refuse the assignment with a reason code; routing finds who takes it."""
        body = bodies.ReturnBody().load(read_json(request))
        return self._act(case_id, lambda c, now: DEPARTMENT_ACTIONS["return"](
            c, department, body, now), department=department)

    # -- departments answer (AMQP) ---------------------------------------------------------
    @event_handler(*(f"{RESPONSE_PREFIX}{a}" for a in DEPARTMENT_ACTIONS),
                   queue=RESPONSES_QUEUE, decoder=decode_amqp_response)
    def on_response(self, events: list[Event]) -> None:
        """A department's ack / progress / resolve / return over AMQP. One the case refuses
        (the wrong department or state: what HTTP answers with 409) is dead-lettered with
        the reason."""
        self._apply(events, "intake.on_response", lambda case, ev, now: DEPARTMENT_ACTIONS[
            ev.type.removeprefix(RESPONSE_PREFIX)](case, ev.data["department"], ev.data, now),
            PoisonEvent, audit=_audit_response)

    # -- 协同 and manual dispatch ----------------------------------------------------------
    @json_http("POST", "/api/v1/cases/<case_id>/assignments", action="assignment.request",
               body=bodies.RequestDepartmentBody, responses={202: answers.CaseView},
               errors=(409,), summary="Ask a department to assist (协同), or dispatch by hand")
    def request_department(self, request: Request, case_id: str) -> tuple[int, dict]:
        """协同: the lead department asks another to assist; or an operator of the case's
        node dispatches a department by hand (a new lead when the case has none)."""
        body = bodies.RequestDepartmentBody().load(read_json(request))
        if body["department"] not in self.ref.catalogue.departments:
            raise ApiError({"department": [f"unknown department {body['department']}"]}, 422)
        p = self.access
        if p is not None and p.role == access.DEPARTMENT:
            if "by" in body:
                raise access.forbidden("a department asks for help as by_department (its own)")
            access.for_department(p, body["by_department"])

        def act(c: Case, now: Any) -> None:
            by = body.get("by")
            if by is not None:
                if c.tier is not None and above(c.tier, by["tier"]):
                    raise TransitionError(f"a {by['tier']} cannot dispatch a case at the "
                                          f"{c.tier}")
                c._check_node(by, self._node_code(c, by["tier"]))
            c.request_department(body["department"], role=body["role"],
                                 requested_by=body.get("by_department") or who(by or {}),
                                 by_department=body.get("by_department"), note=body["note"],
                                 at=now)

        return 202, self._act(case_id, act, by=body.get("by"))

    # -- verification, rating, follow-up ---------------------------------------------------
    @json_http("POST", "/api/v1/cases/<case_id>/verification", action="case.verify",
               body=bodies.VerificationBody, responses={200: answers.CaseView},
               errors=(409,), summary="Verify on site (核查)")
    def verification(self, request: Request, case_id: str) -> dict[str, Any]:
        """核查: the cell's grid worker passes (closing the case) or fails it (rework)."""
        body = bodies.VerificationBody().load(read_json(request))
        st = self.settings
        return self._act(case_id, lambda c, now: c.verify(
            passed=body["passed"], by=body["by"], cell_code=c.grid_code, note=body["note"],
            media_urls=body["media_urls"], rework=body["rework"], at=now,
            rating_window=timedelta(days=st.rating_window_days),
            follow_up_after=timedelta(days=st.follow_up_days)), by=body["by"])

    @json_http("POST", "/api/v1/cases/<case_id>/rating", action="case.rate",
               body=bodies.RatingBody, responses={200: answers.CaseView}, errors=(409,),
               summary="Rate the result (评议)")
    def rating(self, request: Request, case_id: str) -> dict[str, Any]:
        """评议: 1–5 and a comment; 2 or less, or "not fixed", reopens where allowed."""
        body = bodies.RatingBody().load(read_json(request))

        def act(c: Case, now: Any) -> None:
            category = self.ref.catalogue.get(c.category)
            c.rate(score=body["score"], fixed=body["fixed"], comment=body["comment"],
                   reporter_id=body["reporter_id"],
                   may_reopen=category.reopen_on_complaint if category else True, at=now)

        return self._act(case_id, act)

    @json_http("GET", "/api/v1/tasks", action="task.work", query=bodies.TaskQuery,
               responses={200: answers.TaskList}, summary="Grid workers' tasks")
    def list_tasks(self, request: Request) -> dict[str, Any]:
        """A grid worker's tasks: ``?assignee=<cell code>&state=open``."""
        q = bodies.TaskQuery().load(request.args.to_dict())
        p = self.access
        if p is not None and p.grid is not None:
            if "assignee" not in q:
                raise access.forbidden(f"this key sees the tasks of grid {p.grid}: give "
                                       "?assignee=<a cell code in it>")
            access.in_grid(p, self.ref.grid.path_codes(q["assignee"]), f"cell {q['assignee']}")
        query = select(Task)
        for column in ("assignee", "state", "kind"):
            if column in q:
                field = tasks.c.assignee_code if column == "assignee" else tasks.c[column]
                query = query.where(field == q[column])
        with self.db.read() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(query.order_by(tasks.c.pk.desc()).limit(q["per_page"])
                             .offset((q["page"] - 1) * q["per_page"])).all()
            return {"items": [views.task_view(t) for t in rows], "page": q["page"],
                    "per_page": q["per_page"], "total": total}

    @json_http("POST", "/api/v1/tasks/<int:task_id>/done", action="task.work",
               body=bodies.TaskDoneBody, responses={200: answers.CaseView}, errors=(409,),
               summary="A follow-up visit (回访) done")
    def task_done(self, request: Request, task_id: int) -> dict[str, Any]:
        """回访 done: the grid worker called on the reporter again."""
        body = bodies.TaskDoneBody().load(read_json(request))
        with self.db.read() as s:
            case_id = s.scalar(select(tasks.c.case_id).where(tasks.c.pk == task_id))
        if case_id is None:
            raise NotFound({"task_id": [f"no task {task_id}"]})

        def act(c: Case, now: Any) -> None:
            task = next(t for t in c.tasks if t.id == task_id)
            c.finish_task(task, by=body["by"], note=body["note"], at=now)

        return self._act(case_id, act, by=body["by"])

    @json_http("GET", "/api/v1/departments/stats", action="stats.read", tag="stats",
               summary="Per department: assignments, returns and reworks")
    def department_stats(self, request: Request) -> dict[str, Any]:
        """Per department: assignments, returns (退单) and reworks (返工) counted."""
        a = assignments
        with self.db.read() as s:
            rows = s.execute(
                select(a.c.department, func.count(),
                       func.sum(case((a.c.state == "returned", 1), else_=0)),
                       func.sum(a.c.reworks))
                .group_by(a.c.department).order_by(a.c.department)
            ).all()
        names = self.ref.catalogue.departments
        return {"departments": [
            {"department": d, "name": names[d].name if d in names else "",
             "assignments": n, "returned": int(r or 0), "reworks": int(w or 0)}
            for d, n, r, w in rows
        ]}

    # -- the public ------------------------------------------------------------------------
    @json_http("GET", "/api/v1/public/cases/<case_id>", action="case.public",
               responses={200: answers.PublicCase}, summary="A case as anyone may see it")
    def public_case(self, request: Request, case_id: str) -> dict[str, Any]:
        """The case as anyone may see it (Open311 fields), without personal data."""
        with self.db.read() as s:
            case = load(s, case_id)
        if case is None:
            raise NotFound({"case_id": [f"no case {case_id}"]})
        cat = self.ref.catalogue
        lead = case.lead()
        agency = cat.departments[lead.department].name if lead and lead.department in \
            cat.departments else ""
        category = cat.get(case.category)
        return views.public_view(case, agency, category.name if category else case.category)
