"""intake: the front door. HTTP for patrol apps and departments; the case read model.

A thin shell: request schemas and resolution live in ``reports``, the case rules in
``cases``, the JSON shapes in ``views``, the tables in ``store``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Request

from shared.events import MAX_DESCRIPTION, MAX_MEDIA, Event, make_event
from shared.extensions.consumer import PoisonEvent, RetryLater, event_handler
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.http import Conflict, NotFound, json_http, read_json, request_body
from shared.extensions.store import Store
from shared.grid import LEVEL_NAMES_ZH
from shared.unit_of_work import UnitOfWork

from . import reports, views
from .cases import Case, CaseState, TransitionError
from .store import Base, Inbox, Outbox, Report, cases


class AckBody(Schema):
    actor = fields.String(load_default="", validate=validate.Length(max=100))
    note = fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))


class ResolveBody(Schema):
    actor = fields.String(load_default="", validate=validate.Length(max=100))
    note = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=MAX_DESCRIPTION),
            reports.NOT_BLANK,
        ],
    )
    media_urls = fields.List(
        fields.Url(schemes={"http", "https"}),
        load_default=list,
        validate=validate.Length(max=MAX_MEDIA),
    )


class CaseListQuery(Schema):
    state = fields.String(validate=validate.OneOf(CaseState.ALL))
    grid = fields.String(validate=validate.Regexp(r"^[0-9]{1,24}\Z", error="digits only"))
    department = fields.String(validate=validate.Length(max=64))
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(
        load_default=20, validate=validate.Range(min=1, max=views.MAX_PER_PAGE)
    )


class GridQuery(Schema):
    code = fields.String(validate=validate.Regexp(r"^[0-9]{1,24}\Z", error="digits only"))
    depth = fields.Integer(validate=validate.Range(min=0, max=10))


class IntakeService:
    name = "intake"

    db = Store(Base.metadata, Outbox, Inbox)
    ref = Reference()
    clock = ClockProvider()

    # -- reports ---------------------------------------------------------------------------
    @json_http("POST", "/api/v1/reports")
    def post_report(self, request: Request) -> tuple[int, dict[str, Any]]:
        raw = read_json(request)
        body = reports.ReportBody().load(raw)
        now = self.clock.now()
        summary = reports.summarise(body, self.ref, now)
        fingerprint = reports.body_fingerprint(raw)
        try:
            return self._register(body, summary, fingerprint, now)
        except IntegrityError:  # the same report_id raced in; it is there now
            return self._register(body, summary, fingerprint, now)

    def _register(
        self, body: dict[str, Any], summary: dict[str, Any], fingerprint: str, now: Any
    ) -> tuple[int, dict[str, Any]]:
        with self.db.transaction() as tx:
            s = tx.session
            existing = s.scalars(
                select(Report).where(Report.report_id == body["report_id"])
            ).first()
            if existing is not None:
                if existing.fingerprint != fingerprint:
                    raise Conflict(
                        {
                            "report_id": [
                                f"already used for case {existing.case_id} with a different body"
                            ]
                        }
                    )
                state = s.scalar(select(cases.c.state).where(cases.c.case_id == existing.case_id))
                return 200, {"case_id": existing.case_id, "created": False, "state": state}
            report = Report(
                report_id=body["report_id"], case_id="", fingerprint=fingerprint, received_at=now
            )
            s.add(report)
            s.flush()
            local = now.astimezone(self.ref.calendar.tz)
            report.case_id = case_id = f"{local:%Y%m%d}-{report.seq:06d}"
            loc = summary["location"]
            case = Case(
                case_id,
                category=summary["category"],
                grid_code=loc["grid_code"],
                building_code=loc["building_code"],
                lat=loc["lat"],
                lng=loc["lng"],
                description=summary["description"],
                reporter=summary["reporter"],
                media_urls=summary["media_urls"],
                occurred_at=summary["occurred_at"],
                reported_at=now,
            )
            s.add(case)
            self._save(tx, case, now)
            tx.emit(
                make_event(
                    "case.reported",
                    case_id,
                    {"report_id": body["report_id"], "case": summary},
                    producer=self.name,
                    at=now,
                )
            )
        return 201, {
            "case_id": case_id,
            "created": True,
            "state": CaseState.REPORTED,
            "links": {"self": f"/api/v1/cases/{case_id}"},
        }

    # -- what patrol apps build their forms from -------------------------------------------
    @json_http("GET", "/api/v1/categories")
    def get_categories(self, request: Request) -> dict[str, Any]:
        cat = self.ref.catalogue
        return {
            "version": cat.version,
            "departments": [d.as_dict() for d in cat.departments.values()],
            "categories": [c.as_dict() for c in cat.categories.values()],
        }

    @json_http("GET", "/api/v1/grids")
    def get_grids(self, request: Request) -> dict[str, Any]:
        q = GridQuery().load(request.args.to_dict())
        grid = self.ref.grid
        node = grid.get(q["code"]) if "code" in q else grid.root
        if node is None:
            raise NotFound({"code": [f"unknown grid code {q['code']}"]})
        return {
            "version": grid.version,
            "levels": [{"name": n, "name_zh": LEVEL_NAMES_ZH[n]} for n in grid.levels.names],
            "cell_level": grid.levels.cell_level,
            "tree": node.as_dict(q.get("depth")),
        }

    # -- reading cases ---------------------------------------------------------------------
    @json_http("GET", "/api/v1/cases/<case_id>")
    def get_case(self, request: Request, case_id: str) -> dict[str, Any]:
        with self.db.read() as s:
            case = _load(s, case_id)
            if case is None:
                raise NotFound({"case_id": [f"no case {case_id}"]})
            return views.case_view(case, views.timeline_of(s, case_id))

    @json_http("GET", "/api/v1/cases")
    def list_cases(self, request: Request) -> dict[str, Any]:
        q = CaseListQuery().load(request.args.to_dict())
        with self.db.read() as s:
            return views.list_cases(
                s,
                state=q.get("state"),
                grid=q.get("grid"),
                department=q.get("department"),
                page=q["page"],
                per_page=q["per_page"],
            )

    # -- departments act -------------------------------------------------------------------
    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/ack")
    def ack(self, request: Request, case_id: str, department: str) -> dict[str, Any]:
        body = AckBody().load(_optional_json(request))
        return self._act(
            case_id,
            lambda c, now: c.acknowledge(
                department, actor=body["actor"], note=body["note"], at=now
            ),
        )

    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/resolve")
    def resolve(self, request: Request, case_id: str, department: str) -> dict[str, Any]:
        body = ResolveBody().load(read_json(request))
        return self._act(
            case_id,
            lambda c, now: c.resolve(
                department,
                actor=body["actor"],
                note=body["note"],
                media_urls=body["media_urls"],
                at=now,
            ),
        )

    def _act(self, case_id: str, action: Any) -> dict[str, Any]:
        now = self.clock.now()
        with self.db.transaction() as tx:
            case = _load(tx.session, case_id, for_update=True)
            if case is None:
                raise NotFound({"case_id": [f"no case {case_id}"]})
            try:
                action(case, now)
            except TransitionError as exc:
                raise Conflict({"state": [str(exc)]}) from exc
            self._save(tx, case, now)
            return views.case_view(case, views.timeline_of(tx.session, case_id))

    def _save(self, tx: UnitOfWork, case: Case, now: Any) -> None:
        """Add what the case recorded to the transaction: timeline entries and events."""
        tx.session.add_all(case.new_entries)
        case.new_entries.clear()
        for type_, data in case.pending_events:
            tx.emit(make_event(type_, case.case_id, data, producer=self.name, at=now))
        case.pending_events.clear()

    @json_http("GET", "/health")
    def health(self, request: Request) -> dict[str, Any]:
        with self.db.read() as s:
            open_cases = s.scalar(select(func.count()).where(cases.c.state.in_(CaseState.OPEN)))
        return {"status": "ok", "service": self.name, "open_cases": open_cases}

    # -- the pipeline tells intake what happened -------------------------------------------
    @event_handler("case.routed", "case.escalated", "assignment.dispatched")
    def on_pipeline(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            fresh = tx.fresh(events, "intake.on_pipeline")
            loaded = _load_many(tx.session, {ev.case_id for ev in fresh})
            for ev in fresh:
                case = loaded.get(ev.case_id)
                if case is None:
                    raise PoisonEvent(f"{ev.type} for unknown case {ev.case_id}")
                d = ev.data
                try:
                    if ev.type == "case.routed":
                        case.routed(d["tier"], d["assignments"], d["routed_at"])
                    elif ev.type == "case.escalated":
                        case.escalated(d, d["escalated_at"])
                    else:
                        case.dispatched(
                            d["department"], d["dispatched_at"], d["routing_key"], d["message_id"]
                        )
                except TransitionError as exc:  # e.g. dispatched overtook a retried routed
                    raise RetryLater(f"{ev.type}: {exc}") from exc
                self._save(tx, case, now)


def _load(session: Session, case_id: str, *, for_update: bool = False) -> Case | None:
    return _load_many(session, {case_id}, for_update=for_update).get(case_id)


def _load_many(session: Session, case_ids: set[str], *, for_update: bool = True) -> dict[str, Case]:
    """Cases with their assignments, locked for the transaction when ``for_update``."""
    if not case_ids:
        return {}
    q = select(Case).where(cases.c.case_id.in_(case_ids)).order_by(cases.c.case_id)
    if for_update:  # in case id order, so that concurrent batches cannot deadlock
        q = q.with_for_update(of=cases)
    return {c.case_id: c for c in session.scalars(q)}


def _optional_json(request: Request) -> dict[str, Any]:
    return read_json(request) if request_body(request) else {}
