"""intake: the front door. HTTP for patrol apps and departments; the case read model.

A thin shell: request schemas and resolution live in ``reports``, the case rules in
``cases``, the JSON shapes in ``views``, the tables in ``store``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import eventlet
from marshmallow import Schema, ValidationError
from nameko.dependency_providers import Config
from nameko.exceptions import UnknownService
from nameko.rpc import RpcProxy, rpc
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Request, Response

from shared import access
from shared.access import Principal
from shared.events import UNSTORABLE, Event, make_event
from shared.extensions.consumer import event_handler
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.http import (
    ApiError,
    Conflict,
    NotFound,
    Unavailable,
    json_http,
    read_json,
)
from shared.extensions.observability import Observed
from shared.extensions.store import Store
from shared.failures import PoisonEvent, RetryLater
from shared.grid import LEVEL_NAMES_ZH
from shared.privacy import mask_value
from shared.unit_of_work import UnitOfWork

from . import answers, bodies, queries, reports, views
from .access import load, load_many, optional_json
from .admin_api import AdminApi
from .cases import Case, CaseState, Extension, TransitionError
from .duplicates import Candidate, nearest, place_of
from .gate import ApiKeyGate, narrowed_department
from .loop_api import LoopApi
from .measures import (
    DEFAULT_TOP,
    CasesQuery,
    Filters,
    FunnelQuery,
    InvalidFilters,
    MeasuresQuery,
    filters_from,
)
from .model import who
from .open311_api import Open311Api
from .openapi_api import OpenApiDocs
from .reports import TakenReport
from .store import Base, Inbox, Outbox, Report, cases

RPC_TIMEOUT_S = 10.0
DUPLICATE_SCAN = 500  # recent open cases of a category looked at for a duplicate
CSV_PAGE = 100  # ledger rows per RPC call when exporting

# What each event from the pipeline does to the case read model.
PIPELINE: dict[str, Callable[[Case, dict[str, Any]], None]] = {
    "case.routed": lambda c, d: c.routed(d["tier"], d["assignments"], d["routed_at"]),
    "assignment.dispatched": lambda c, d: c.dispatched(
        d["department"], d["dispatched_at"], d["routing_key"], d["message_id"]
    ),
    "assignments.added": lambda c, d: c.added(d, d["added_at"]),
    "case.needs_dispatch": lambda c, d: c.needs_dispatch(d, d["at"]),
    "case.escalated": lambda c, d: c.escalated(d, d["escalated_at"]),
    "case.reminded": lambda c, d: c.reminded(d, d["reminded_at"]),
    "case.tier_changed": lambda c, d: c.tier_changed(d, d["at"]),
    "assignment.rescheduled": lambda c, d: c.rescheduled(d, d["at"]),
    "supervision.opened": lambda c, d: c.supervision(True, d["items"], d["items"][0]["at"]),
    "supervision.closed": lambda c, d: c.supervision(False, d["items"], d["items"][0]["at"]),
}


class IntakeService(LoopApi, AdminApi, Open311Api, OpenApiDocs, Observed):
    name = "intake"

    db = Store(Base.metadata, Outbox, Inbox)
    ref = Reference()
    clock = ClockProvider()
    config = Config()
    escalation = RpcProxy("escalation")
    access: Principal | None = ApiKeyGate()  # type: ignore[assignment]  # who asks (HTTP)

    # -- reports ---------------------------------------------------------------------------
    @json_http("POST", "/api/v1/reports", action="report.create", body=reports.ReportBody,
               responses={201: answers.ReportAnswer, 200: answers.ReportAnswer}, errors=(409,),
               summary="Raise a report")
    def post_report(self, request: Request) -> tuple[int, dict[str, Any]]:
        raw = read_json(request)
        body = reports.ReportBody().load(raw)
        now = self.clock.now()
        return self._register(self._checked(body, raw, now), now)

    def _register(self, report: TakenReport, now: Any) -> tuple[int, dict[str, Any]]:
        """Store one report in a transaction of its own (see ``_take``)."""
        try:
            with self.db.transaction() as tx:
                return self._take(tx, report, now)
        except IntegrityError:  # the same report_id raced in; it is there now
            with self.db.transaction() as tx:
                return self._take(tx, report, now)

    @json_http("POST", "/api/v1/reports/bulk", action="report.create", body=reports.BulkBody,
               responses={200: answers.BulkAnswer},
               summary="Raise many reports at once (a patrol app syncing after being offline)")
    def post_reports(self, request: Request) -> dict[str, Any]:
        """Every item is judged on its own; the valid ones are stored in one transaction,
        so a bulk of a hundred costs one commit, not a hundred."""
        items = reports.BulkBody().load(read_json(request))["reports"]
        now = self.clock.now()
        results: dict[int, dict[str, Any]] = {}
        taken: list[tuple[int, TakenReport]] = []
        for index, raw in enumerate(items):
            try:
                taken.append((index, self._checked(reports.bulk_item(raw), raw, now)))
            except ValidationError as exc:
                results[index] = {"index": index, "status": 422, "errors": exc.messages}
            except access.AccessDenied as exc:
                results[index] = {"index": index, "status": exc.status,
                                  "errors": {"_auth": [exc.reason]}}
        for attempt in (1, 2):
            stored: dict[int, dict[str, Any]] = {}
            try:
                with self.db.transaction() as tx:
                    for index, report in taken:
                        try:
                            status, out = self._take(tx, report, now)
                        except Conflict as exc:
                            stored[index] = {"index": index, "status": exc.status,
                                             "errors": exc.errors}
                        else:
                            stored[index] = {"index": index, "status": status, **out}
                break
            except IntegrityError:  # a report_id raced in: the second try finds it
                if attempt == 2:
                    raise
        results.update(stored)
        ordered = [results[i] for i in range(len(items))]
        return {
            "results": ordered,
            "created": sum(1 for r in ordered if r["status"] == 201),
            "existing": sum(1 for r in ordered if r["status"] == 200),
            "rejected": sum(1 for r in ordered if r["status"] >= 400),
        }

    def _checked(self, body: dict[str, Any], raw: dict[str, Any], now: Any) -> TakenReport:
        """A valid report body resolved against the district, within the key's grid."""
        summary = reports.summarise(body, self.ref, now)
        cell = summary["location"]["grid_code"]
        if self.access is not None:
            access.in_grid(self.access, self.ref.grid.path_codes(cell), f"the report's cell {cell}")
        return TakenReport(body, summary, reports.body_fingerprint(raw))

    def _take(self, tx: UnitOfWork, report: TakenReport, now: Any) -> tuple[int, dict[str, Any]]:
        """Store one report in ``tx``: a new case (201), or the case it made before (200);
        Conflict when its report_id was used with another body."""
        body, summary = report.body, report.summary
        s = tx.session
        existing = s.scalars(select(Report).where(Report.report_id == body["report_id"])).first()
        if existing is not None:
            if existing.fingerprint != report.fingerprint:
                raise Conflict(
                    {
                        "report_id": [
                            f"already used for case {existing.case_id} with a different body"
                        ]
                    }
                )
            state = s.scalar(select(cases.c.state).where(cases.c.case_id == existing.case_id))
            return 200, {"case_id": existing.case_id, "created": False, "state": state}
        row = Report(report_id=body["report_id"], case_id="", fingerprint=report.fingerprint,
                     received_at=now)
        s.add(row)
        s.flush()
        local = now.astimezone(self.ref.calendar.tz)
        row.case_id = case_id = f"{local:%Y%m%d}-{row.seq:06d}"
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
            severity=summary["severity"],
        )
        s.add(case)
        original = self._original_of(s, case, now)
        if original is not None:
            found, distance = original
            case.mark_duplicate(found.case_id, distance, now)
            found.attach(case_id, case.reporter, body["report_id"], now)
            self._save(tx, found, now)
        else:
            tx.emit(make_event("case.reported", case_id,
                               {"report_id": body["report_id"], "case": summary},
                               producer=self.name, at=now))
        self._save(tx, case, now)
        out = {
            "case_id": case_id,
            "created": True,
            "state": case.state,
            "links": {"self": f"/api/v1/cases/{case_id}"},
        }
        if case.duplicate_of:
            out["duplicate_of"] = case.duplicate_of
        return 201, out

    def _original_of(self, s: Session, case: Case, now: Any) -> tuple[Case, float] | None:
        """The open case this new one repeats (same category, near, recent), locked."""
        category = self.ref.catalogue.get(case.category)
        place = place_of(case.lat, case.lng, case.building_code or case.grid_code,
                         self.ref.grid)
        if category is None or place is None or category.duplicate_radius_m <= 0:
            return None
        since = now - timedelta(hours=category.duplicate_window_h)
        rows = s.execute(
            select(cases.c.case_id, cases.c.lat, cases.c.lng, cases.c.grid_code,
                   cases.c.building_code)
            .where(cases.c.category == case.category, cases.c.reported_at >= since,
                   cases.c.state.in_((*CaseState.OPEN, CaseState.RESOLVED)),
                   cases.c.case_id != case.case_id)
            .order_by(cases.c.reported_at.desc()).limit(DUPLICATE_SCAN)
        ).all()
        candidates = []
        for r in rows:
            p = place_of(r.lat, r.lng, r.building_code or r.grid_code, self.ref.grid)
            if p is not None:
                candidates.append(Candidate(r.case_id, *p))
        hit = nearest(place, candidates, category.duplicate_radius_m)
        if hit is None:
            return None
        found = load(s, hit[0].case_id, for_update=True)
        return (found, hit[1]) if found is not None else None

    @json_http("POST", "/api/v1/cases/<case_id>/unlink", action="case.operate",
               body=bodies.UnlinkBody, responses={200: answers.CaseView}, errors=(409,),
               summary="Unlink a duplicate: route it as a case of its own")
    def unlink(self, request: Request, case_id: str) -> dict[str, Any]:
        """Not a duplicate after all: the case is routed on its own, and its reporter no
        longer follows the other case."""
        body = bodies.UnlinkBody().load(read_json(request))
        now = self.clock.now()
        with self.db.transaction() as tx:
            s = tx.session
            original_id = s.scalar(select(cases.c.duplicate_of).where(cases.c.case_id == case_id))
            loaded = load_many(s, {case_id, *([original_id] if original_id else [])})
            case = loaded.get(case_id)
            if case is None:
                raise NotFound({"case_id": [f"no case {case_id}"]})
            self._may_touch(case, by=body["by"])
            actor = who(body["by"])
            try:
                case._check_node(body["by"], self._node_code(case, body["by"]["tier"]))
                case.unlink(actor=actor, reason=body["reason"], at=now)
                if original_id in loaded:
                    loaded[original_id].detach(case_id, now, actor)
                    self._save(tx, loaded[original_id], now)
            except TransitionError as exc:
                raise Conflict({"state": [str(exc)]}) from exc
            report_id = s.scalar(select(Report.report_id).where(Report.case_id == case_id))
            tx.emit(make_event("case.reported", case_id,
                               {"report_id": report_id, "case": reports.summary_of(case, self.ref)},
                               producer=self.name, at=now))
            self._save(tx, case, now)
            return self._shown(views.case_view(case, views.timeline_of(s, case_id)))

    # -- what patrol apps build their forms from -------------------------------------------
    @json_http("GET", "/api/v1/categories", action="reference.read",
               summary="The catalogue: departments and categories", tag="reference")
    def get_categories(self, request: Request) -> dict[str, Any]:
        cat = self.ref.catalogue
        return {
            "version": cat.version,
            "departments": [d.as_dict() for d in cat.departments.values()],
            "categories": [c.as_dict() for c in cat.categories.values()],
        }

    @json_http("GET", "/api/v1/grids", action="reference.read", query=bodies.GridQuery,
               errors=(404,), summary="The grid's levels and its tree (or a subtree)",
               tag="reference")
    def get_grids(self, request: Request) -> dict[str, Any]:
        q = bodies.GridQuery().load(request.args.to_dict())
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
    @json_http("GET", "/api/v1/cases/<case_id>", action="case.read",
               responses={200: answers.CaseView}, summary="A case with its timeline")
    def get_case(self, request: Request, case_id: str) -> dict[str, Any]:
        with self.db.read() as s:
            case = load(s, case_id)
            if case is None:
                raise NotFound({"case_id": [f"no case {case_id}"]})
            self._may_touch(case)
            return self._shown(views.case_view(case, views.timeline_of(s, case_id)))

    @json_http("GET", "/api/v1/cases", action="case.list", query=bodies.CaseListQuery,
               responses={200: answers.CaseList}, summary="List cases, newest first")
    def list_cases(self, request: Request) -> dict[str, Any]:
        q = bodies.CaseListQuery().load(request.args.to_dict())
        assert self.access is not None
        with self.db.read() as s:
            return self._shown(views.list_cases(
                s,
                state=q.get("state"),
                grid=access.narrowed_grid(self.access, q.get("grid"), self.ref.grid.path_codes),
                department=narrowed_department(self.access, q.get("department")),
                page=q["page"],
                per_page=q["per_page"],
            ))

    # -- the operators' monitor: funnel, measures, case lists (RPC, and HTTP for stats) -----
    # Filters arrive as keyword arguments (RPC) or a query string (HTTP): since / until (ISO
    # 8601 with an offset), grid (a node's code), department; and for the case list state,
    # tier, limit, offset. A bad one is InvalidFilters over RPC (its text: JSON naming the
    # field) and a 422 naming the field over HTTP. The definitions are in ``measures``.
    @rpc(expected_exceptions=InvalidFilters)
    def funnel(self, **filters: Any) -> dict[str, Any]:
        """The case funnel, drilled down the grid (``queries.funnel``)."""
        f, _ = self._rpc_filters(FunnelQuery, filters)
        with self.db.read() as s:
            return queries.funnel(s, self.ref.grid, f, self.ref.catalogue)

    @rpc(expected_exceptions=InvalidFilters)
    def measures(self, **filters: Any) -> dict[str, Any]:
        """响应率, 解决率, 满意率, 按期结案率, 返工率 and the rest (``queries.measures``)."""
        f, q = self._rpc_filters(MeasuresQuery, filters)
        return self._measures(f, q)

    @rpc(expected_exceptions=InvalidFilters)
    def cases(self, **filters: Any) -> dict[str, Any]:
        """A page of cases, newest first, with the total (``queries.case_list``)."""
        f, q = self._rpc_filters(CasesQuery, filters)
        with self.db.read() as s:
            return queries.case_list(s, f, q.get("state"), q.get("tier"), q.get("limit", 50),
                                     q.get("offset", 0), grid=self.ref.grid,
                                     catalogue=self.ref.catalogue)

    @rpc(expected_exceptions=InvalidFilters)
    def case(self, case_id: str) -> dict[str, Any] | None:
        """The case as ``GET /api/v1/cases/<id>`` shows it, or None when there is none."""
        if not isinstance(case_id, str):
            raise InvalidFilters({"case_id": ["Not a valid string."]})
        if len(case_id) > 64 or UNSTORABLE.search(case_id):
            return None  # no case has such an id
        with self.db.read() as s:
            case = load(s, case_id)
            return None if case is None else views.case_view(case, views.timeline_of(s, case_id))

    @json_http("GET", "/api/v1/stats/funnel", action="stats.read", query=FunnelQuery,
               summary="The case funnel of a grid node")
    def stats_funnel(self, request: Request) -> dict[str, Any]:
        f, _ = self._http_filters(FunnelQuery, request)
        with self.db.read() as s:
            return queries.funnel(s, self.ref.grid, f, self.ref.catalogue)

    @json_http("GET", "/api/v1/stats/measures", action="stats.read", query=MeasuresQuery,
               summary="The district's measures (响应率, 解决率, 满意率, 按期结案率, 返工率)")
    def stats_measures(self, request: Request) -> dict[str, Any]:
        return self._measures(*self._http_filters(MeasuresQuery, request))

    def _measures(self, f: Filters, q: dict[str, Any]) -> dict[str, Any]:
        with self.db.read() as s:
            return queries.measures(s, self.ref.grid, self.ref.catalogue, f, self.clock.now(),
                                    q.get("top", DEFAULT_TOP))

    def _filters(self, schema: type[Schema], raw: dict[str, Any]) -> tuple[Filters, dict]:
        q = schema().load(raw)
        return filters_from(q, self.ref.grid, self.ref.catalogue), q

    def _rpc_filters(self, schema: type[Schema], raw: dict[str, Any]) -> tuple[Filters, dict]:
        try:
            return self._filters(schema, raw)
        except ValidationError as exc:
            raise InvalidFilters(exc.normalized_messages()) from exc

    def _http_filters(self, schema: type[Schema], request: Request) -> tuple[Filters, dict]:
        raw = request.args.to_dict()
        if self.access is not None:  # a scoped key looks at its own subtree
            raw = access.narrowed(self.access, raw, self.ref.grid.path_codes)
        try:
            return self._filters(schema, raw)
        except InvalidFilters as exc:
            raise ApiError(exc.errors, status=422) from exc

    # -- departments act -------------------------------------------------------------------
    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/ack",
               action="assignment.respond", body=bodies.AckBody, body_optional=True,
               responses={200: answers.CaseView}, errors=(409,), summary="Report in (报到)")
    def ack(self, request: Request, case_id: str, department: str) -> dict[str, Any]:
        body = bodies.AckBody().load(optional_json(request))
        return self._act(
            case_id,
            lambda c, now: c.acknowledge(
                department, actor=body["actor"], note=body["note"], at=now
            ),
        department=department)

    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/resolve",
               action="assignment.respond", body=bodies.ResolveBody,
               responses={200: answers.CaseView}, errors=(409,), summary="Resolve (办结)")
    def resolve(self, request: Request, case_id: str, department: str) -> dict[str, Any]:
        body = bodies.ResolveBody().load(read_json(request))
        return self._act(
            case_id,
            lambda c, now: c.resolve(
                department,
                actor=body["actor"],
                note=body["note"],
                media_urls=body["media_urls"],
                at=now,
            ),
        department=department)

    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/pause",
               action="assignment.respond", body=bodies.PauseBody,
               responses={200: answers.CaseView}, errors=(409,),
               summary="Pause the department's clocks (缓办)")
    def pause(self, request: Request, case_id: str, department: str) -> dict[str, Any]:
        """缓办: the department's clocks stop counting; a reason is required."""
        body = bodies.PauseBody().load(read_json(request))
        return self._act(case_id, lambda c, now: c.pause(
            department, reason=body["reason"], actor=body["actor"], at=now),
            department=department)

    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/resume",
               action="assignment.respond", body=bodies.ResumeBody, body_optional=True,
               responses={200: answers.CaseView}, errors=(409,),
               summary="Resume the department's clocks")
    def resume(self, request: Request, case_id: str, department: str) -> dict[str, Any]:
        body = bodies.ResumeBody().load(optional_json(request))
        return self._act(case_id, lambda c, now: c.resume(
            department, actor=body["actor"], at=now), department=department)

    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/extensions",
               action="assignment.respond", body=bodies.ExtensionBody,
               responses={201: answers.ExtensionAnswer}, errors=(409,),
               summary="Ask for more time (延期)")
    def request_extension(
        self, request: Request, case_id: str, department: str
    ) -> tuple[int, dict[str, Any]]:
        """延期: ask the tier above for more time on the resolve deadline."""
        body = bodies.ExtensionBody().load(read_json(request))
        made: list[Extension] = []

        def act(c: Case, now: Any) -> None:
            made.append(c.request_extension(department, extend_by=body["extend_by"],
                                            reason=body["reason"], actor=body["actor"], at=now))

        view = self._act(case_id, act, department=department)
        return 201, {"extension": views.extension_view(made[0]), "case": view}

    @json_http("POST", "/api/v1/cases/<case_id>/extensions/<int:extension_id>/decision",
               action="case.operate", body=bodies.DecisionBody,
               responses={200: answers.CaseView}, errors=(409,),
               summary="Decide an extension request")
    def decide_extension(self, request: Request, case_id: str, extension_id: int) -> dict:
        body = bodies.DecisionBody().load(read_json(request))

        def act(c: Case, now: Any) -> None:
            ext = next((e for e in c.extensions if e.id == extension_id), None)
            if ext is None:
                raise NotFound({"extension_id": [f"no extension {extension_id} on {case_id}"]})
            c.decide_extension(ext, approved=body["approved"], by=body["by"],
                               node_code=self._node_code(c, body["by"]["tier"]),
                               note=body["note"], at=now)

        return self._act(case_id, act, by=body["by"])

    @json_http("POST", "/api/v1/cases/<case_id>/assignments/<department>/reopen",
               action="case.operate", body=bodies.ReopenBody,
               responses={200: answers.CaseView}, errors=(409,),
               summary="Send a resolved assignment back (返工)")
    def reopen(self, request: Request, case_id: str, department: str) -> dict[str, Any]:
        """返工: an operator sends a resolved assignment back; its clocks restart."""
        body = bodies.ReopenBody().load(read_json(request))
        return self._act(case_id, lambda c, now: c.reopen(
            department, reason=body["reason"], by=body["by"],
            node_code=self._node_code(c, body["by"]["tier"]), at=now), by=body["by"])

    # -- operators whistle -----------------------------------------------------------------
    @json_http("POST", "/api/v1/cases/<case_id>/whistle", action="case.operate",
               body=bodies.WhistleBody, responses={202: answers.CaseView}, errors=(409,),
               summary="Blow the whistle (吹哨): summon departments")
    def whistle(self, request: Request, case_id: str) -> tuple[int, dict[str, Any]]:
        """吹哨: a community or street operator summons departments to report in."""
        body = bodies.WhistleBody().load(read_json(request))
        unknown = [d for d in body["departments"] if d not in self.ref.catalogue.departments]
        if unknown:
            raise ApiError({"departments": [f"unknown department(s) {', '.join(unknown)}; "
                                            "GET /api/v1/categories lists them"]}, status=422)
        view = self._act(case_id, lambda c, now: c.whistle(
            level=body["level"], departments=body["departments"], by=body["by"],
            node_code=self._node_code(c, body["by"]["tier"]), reason=body["reason"], at=now),
            by=body["by"])
        return 202, view

    def _node_code(self, case: Case, tier: str) -> str:
        """The code of the node answering for ``case`` at ``tier``."""
        cell, _ = self.ref.grid.cell_for_code(case.grid_code)
        return self.ref.grid.tier_node(cell, tier).code

    # -- the supervision ledger (kept by escalation) ---------------------------------------
    @json_http("GET", "/api/v1/supervision", action="ledger.read",
               query=bodies.SupervisionQuery,
               responses={200: {"application/json": None, "text/csv": None}},
               summary="The supervision ledger (督办台账)")
    def supervision(self, request: Request) -> Any:
        """督办台账: overdue items with owner, department, deadline, lateness and history."""
        q = self._ledger_query(request)
        if q.pop("format") == "csv":
            return self._ledger_csv(q)
        return self._ledger(**q)

    @json_http("GET", "/api/v1/supervision.csv", action="ledger.read",
               query=bodies.SupervisionQuery, responses={200: {"text/csv": None}},
               summary="The supervision ledger as CSV")
    def supervision_csv(self, request: Request) -> Response:
        q = self._ledger_query(request)
        q.pop("format")
        return self._ledger_csv(q)

    def _ledger_query(self, request: Request) -> dict[str, Any]:
        q = bodies.SupervisionQuery().load(request.args.to_dict())
        assert self.access is not None
        return access.narrowed(self.access, q, self.ref.grid.path_codes)

    def _ledger(self, **filters: Any) -> dict[str, Any]:
        try:
            with eventlet.Timeout(RPC_TIMEOUT_S):
                return self.escalation.ledger(**filters)
        except eventlet.Timeout as exc:
            raise Unavailable(
                f"the escalation service did not answer within {RPC_TIMEOUT_S:.0f} s; try again"
            ) from exc
        except UnknownService as exc:  # its RPC queue is not there: it never ran on this broker
            raise Unavailable("the escalation service is not running; try again") from exc

    def _ledger_csv(self, filters: dict[str, Any]) -> Response:
        filters.pop("page", None)
        filters["per_page"] = CSV_PAGE
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            got = self._ledger(**filters, page=page)
            items.extend(got["items"])
            if page * CSV_PAGE >= got["total"] or not got["items"]:
                break
            page += 1
        return Response(
            views.ledger_csv(items), mimetype="text/csv",
            headers={"Content-Disposition": 'attachment; filename="supervision.csv"'},
        )

    def _act(self, case_id: str, action: Callable[[Case, Any], Any], *,
             department: str | None = None, by: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply ``action`` to the case, once the caller may (``_may_touch``)."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            case = load(tx.session, case_id, for_update=True)
            if case is None:
                raise NotFound({"case_id": [f"no case {case_id}"]})
            self._may_touch(case, department=department, by=by)
            try:
                action(case, now)
            except TransitionError as exc:
                raise Conflict({"state": [str(exc)]}) from exc
            self._save(tx, case, now)
            return self._shown(views.case_view(case, views.timeline_of(tx.session, case_id)))

    def _may_touch(self, case: Case, *, department: str | None = None,
                   by: dict[str, Any] | None = None) -> None:
        """The caller's scope (``shared.access``): the case in its grid or holding its
        department's assignment; acting for its own department; speaking for a node of
        its own subtree."""
        p = self.access
        if p is None:  # not an HTTP request
            return
        access.on_case(p, self.ref.grid.path_codes(case.grid_code),
                       [a.department for a in case.assignments], case.case_id)
        if department is not None:
            access.for_department(p, department)
        if by is not None:
            access.speaks_for(p, self.ref.grid.path_codes(by["code"]), by["code"])

    def _shown(self, view: dict[str, Any]) -> dict[str, Any]:
        """Reporters' names and phones only for the roles that need them."""
        p = self.access
        return view if p is None or p.sees_personal_data else mask_value(view)

    def _save(self, tx: UnitOfWork, case: Case, now: Any) -> None:
        """Add what the case recorded to the transaction: timeline entries and events. A
        case that is resolved gets its verification task (核查) for the cell's grid worker."""
        if case.state == CaseState.RESOLVED and case.task("verification") is None:
            case.open_task("verification", self._cell_of(case), now)
        new_tasks = [t for t in case.tasks if getattr(t, "_pk", None) is None]
        if new_tasks:
            tx.session.flush()  # their ids
            summary = reports.summary_of(case, self.ref)
            for t in new_tasks:
                case.pending_events.append(("task.created", {
                    "task": {"id": t.id, "kind": t.kind, "assignee": t.assignee,
                             "due_at": t.due_at}, "case": summary, "at": now}))
        tx.session.add_all(case.new_entries)
        case.new_entries.clear()
        for type_, data in case.pending_events:
            tx.emit(make_event(type_, case.case_id, data, producer=self.name, at=now))
        case.pending_events.clear()

    def _cell_of(self, case: Case) -> dict[str, Any]:
        """The case's cell and its grid worker, as a task's assignee."""
        cell, _ = self.ref.grid.cell_for_code(case.grid_code)
        return self.ref.grid.tier_info(cell, cell.level)

    @json_http("GET", "/health", public=True, responses={200: answers.Health},
               summary="Liveness and the number of open cases")
    def health(self, request: Request) -> dict[str, Any]:
        with self.db.read() as s:
            open_cases = s.scalar(select(func.count()).where(cases.c.state.in_(CaseState.OPEN)))
        return {"status": "ok", "service": self.name, "open_cases": open_cases}

    # -- the pipeline tells intake what happened -------------------------------------------
    @event_handler(*PIPELINE, "followup.due")
    def on_pipeline(self, events: list[Event]) -> None:
        def apply(case: Case, ev: Event, now: Any) -> None:
            if ev.type == "followup.due":
                case.follow_up_due(self._cell_of(case), ev.data["due_at"])
            else:
                PIPELINE[ev.type](case, ev.data)

        # a TransitionError here means an event overtook its cause (dispatched before routed)
        self._apply(events, "intake.on_pipeline", apply, RetryLater)

    def _apply(self, events: list[Event], consumer: str,
               apply: Callable[[Case, Event, Any], None], refused: type[Exception],
               audit: Callable[[Session, Event], None] | None = None) -> None:
        """Apply fresh events to their cases in one transaction; a case that refuses an
        event raises ``refused`` (retry it later, or dead-letter it). ``audit`` records
        each applied event in the audit log, in the same transaction."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            fresh = tx.fresh(events, consumer)
            loaded = load_many(tx.session, {ev.case_id for ev in fresh})
            for ev in fresh:
                case = loaded.get(ev.case_id)
                if case is None:
                    raise PoisonEvent(f"404: {ev.type} for unknown case {ev.case_id}")
                try:
                    apply(case, ev, now)
                except TransitionError as exc:
                    raise refused(f"409: {ev.type}: {exc}") from exc
                self._save(tx, case, now)
                if audit is not None:
                    audit(tx.session, ev)
