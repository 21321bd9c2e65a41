"""intake's Open311 GeoReport v2 front, under ``/open311/v2/``: discovery, services, a
service definition, requests (POST and GET), a request, tokens — each as ``.json`` and
``.xml``. Mixed into ``IntakeService``; the documents, the checks and the mapping onto a
report are in ``open311``, the report itself is registered as any other (``_register``).

The GETs are public, as the spec has them: a request shows what a case's public view
shows (``views.public_view``: never its reporter). POST requests carries its API key as
the spec does, in the form (``api_key``), and goes through intake's gate all the same
(``gate.FormKey``): the key must take ``report.create`` at its rate, the report's cell
must lie in its grid, the request is audited; a missing or bad key is a 403.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from marshmallow import ValidationError
from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from shared import access
from shared.access import AccessDenied
from shared.config import Settings
from shared.extensions.http import MAX_BODY_BYTES, ApiError, json_http, request_body

from . import open311, reports, views
from .access import load
from .cases import Case, CaseState
from .gate import FormKey
from .open311 import Document, Open311Error
from .store import Report, cases

if TYPE_CHECKING:
    from nameko.dependency_providers import Config

    from shared.clock import Clock
    from shared.extensions.store import StoreAccess
    from shared.reference import ReferenceData

Answer = tuple[int, Document]


def _both(method: str, path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A resource in both formats, ``/open311/v2/<path>.json`` and ``.xml``; public (POST
    requests checks the api_key of its form itself)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for fmt in open311.CONTENT_TYPES:
            fn = json_http(method, f"{open311.PREFIX}/{path}.{fmt}", public=True)(fn)
        return fn

    return register


class Open311Api:
    db: StoreAccess
    ref: ReferenceData
    clock: Clock
    config: Config
    form_key = FormKey()  # the form's api_key, through intake's gate

    if TYPE_CHECKING:
        def _register(self, report: reports.TakenReport,
                      now: Any) -> tuple[int, dict[str, Any]]: ...

    @_both("GET", "discovery")
    def open311_discovery(self, request: Request) -> Response:
        def answer() -> Answer:
            self._jurisdiction(request)
            url = Settings.from_config(self.config).public_url + open311.PREFIX
            return 200, open311.discovery(url, self.ref.catalogue.version,
                                          self.ref.grid.root.name)

        return self._open311(request, answer)

    @_both("GET", "services")
    def open311_services(self, request: Request) -> Response:
        def answer() -> Answer:
            self._jurisdiction(request)
            cat = self.ref.catalogue
            return 200, Document("services", [open311.service_view(c, cat)
                                              for c in cat.categories.values()])

        return self._open311(request, answer)

    @_both("GET", "services/<service_code>")
    def open311_service(self, request: Request, service_code: str) -> Response:
        def answer() -> Answer:
            self._jurisdiction(request)
            category = self.ref.catalogue.get(service_code)
            if category is None:
                raise Open311Error(404, f"service_code: no service {service_code!r} "
                                        "(GET services lists them)")
            return 200, open311.service_definition(category)

        return self._open311(request, answer)

    @_both("POST", "requests")
    def open311_post_request(self, request: Request) -> Response:
        return self._open311(request, lambda: self._open311_create(request))

    @_both("GET", "requests")
    def open311_requests(self, request: Request) -> Response:
        return self._open311(request, lambda: self._open311_list(request))

    @_both("GET", "requests/<case_id>")
    def open311_request(self, request: Request, case_id: str) -> Response:
        def answer() -> Answer:
            self._jurisdiction(request)
            with self.db.read() as s:
                case = load(s, case_id)
                if case is None:
                    raise Open311Error(404, f"service_request_id: no request {case_id!r}")
                return 200, Document("service_requests", [self._open311_view(case)])

        return self._open311(request, answer)

    @_both("GET", "tokens/<token>")
    def open311_token(self, request: Request, token: str) -> Response:
        def answer() -> Answer:
            self._jurisdiction(request)
            case_id = None
            if open311.TOKEN.match(token):  # an Open311 request's, not a patrol app's
                with self.db.read() as s:
                    case_id = s.scalar(select(Report.case_id).where(Report.report_id == token))
            if not case_id:
                raise Open311Error(404, f"token: no request has the token {token!r}")
            return 200, open311.token_document(token, case_id)

        return self._open311(request, answer)

    # -- the work ----------------------------------------------------------------------------
    def _open311_create(self, request: Request) -> Answer:
        """A report like a patrol app's, from the form; the same form again from the same
        key within a day is the same request (``open311.tokens_for``): 200, no second case."""
        raw = request_body(request)
        if len(raw) > MAX_BODY_BYTES:
            raise Open311Error(413, f"the form is larger than {MAX_BODY_BYTES} bytes")
        items = open311.parse_form(raw, request.mimetype)
        params: dict[str, str] = {}
        for key, value in items:  # a field given twice: its first value
            params.setdefault(key, value)
        token = params.get("api_key", "").strip()
        if not token:
            raise Open311Error(403, "api_key: required, a gridflow API key (gfk_…) that may "
                                    "report (report.create)")
        try:
            p = self.form_key.admit(request, token, "report.create")
        except AccessDenied as exc:
            raise _refusal(exc) from None
        form = open311.PostForm().load(open311.present(params))
        open311.check_jurisdiction(form.get("jurisdiction_id"), self.ref.grid.root)
        cat = self.ref.catalogue
        category = cat.get(form["service_code"])
        if category is None:
            raise Open311Error(404, f"service_code: no service {form['service_code']!r} "
                                    "(GET services lists them)")
        values = open311.check_attributes(category, open311.attributes_of(items))
        location, by_address = open311.location_of(form, self.ref.grid)
        now = self.clock.now()
        report_id, earlier = open311.tokens_for(p.key_id, items, now)
        with self.db.read() as s:  # first posted yesterday, less than a day ago?
            first = s.scalar(select(Report.received_at).where(Report.report_id == earlier))
        if first is not None and first >= now - open311.RETRY_WINDOW:
            report_id = earlier
        body = open311.load_report(
            open311.report_of(form, values, category, location, report_id), by_address)
        try:
            summary = reports.summarise(body, self.ref, now)
        except ValidationError as exc:
            raise open311.bad_request(exc.messages, open311.report_fields(by_address)) from None
        cell = summary["location"]["grid_code"]
        try:
            access.in_grid(p, self.ref.grid.path_codes(cell), f"the request's compound {cell}")
        except AccessDenied as exc:
            self.form_key.refused(request, exc)
            raise _refusal(exc) from None
        fingerprint = reports.body_fingerprint(open311.canonical(p.key_id, items))
        status, out = self._register(reports.TakenReport(body, summary, fingerprint), now)
        return status, open311.created(out["case_id"], report_id,
                                       open311.service_notice(category, cat),
                                       form.get("account_id"))

    def _open311_list(self, request: Request) -> Answer:
        """GET requests: by ids (which override the rest), or in a window of at most 90
        days (the last 90 by default) by service code and status; newest first, a page."""
        q = open311.RequestsQuery().load(open311.present(request.args.to_dict()))
        open311.check_jurisdiction(q.get("jurisdiction_id"), self.ref.grid.root)
        sel, limit = select(Case), q["page_size"]
        if "service_request_id" in q:
            sel = sel.where(cases.c.case_id.in_(q["service_request_id"]))
            limit = open311.MAX_IDS
        else:
            start, end = open311.window(q.get("start_date"), q.get("end_date"),
                                        self.clock.now())
            sel = sel.where(cases.c.reported_at >= start, cases.c.reported_at <= end)
            if "service_code" in q:
                open311.check_codes(q["service_code"], self.ref.catalogue)
                sel = sel.where(cases.c.category.in_(q["service_code"]))
            statuses = set(q.get("status", ("open", "closed")))
            if statuses == {"open"}:
                sel = sel.where(cases.c.state.not_in(CaseState.FINAL))
            elif statuses == {"closed"}:
                sel = sel.where(cases.c.state.in_(CaseState.FINAL))
            sel = sel.offset((q["page"] - 1) * q["page_size"])
        sel = sel.order_by(cases.c.reported_at.desc(), cases.c.pk.desc()).limit(limit)
        with self.db.read() as s:
            return 200, Document("service_requests",
                                 [self._open311_view(c) for c in s.scalars(sel)])

    def _open311_view(self, case: Case) -> dict[str, Any]:
        """The case as an Open311 request: agency_responsible the lead department (the
        category's until it is routed), service_notice the category's deadlines."""
        cat = self.ref.catalogue
        category = cat.get(case.category)
        lead = case.lead()
        department = lead.department if lead else category.lead if category else ""
        agency = cat.departments[department].name if department in cat.departments else ""
        public = views.public_view(case, agency, category.name if category else case.category)
        return open311.request_view(
            public, place=self.ref.grid.get(case.building_code or case.grid_code),
            grid=self.ref.grid,
            service_notice=open311.service_notice(category, cat) if category else None)

    def _jurisdiction(self, request: Request) -> None:
        open311.check_jurisdiction(request.args.get("jurisdiction_id"), self.ref.grid.root)

    def _open311(self, request: Request, answer: Callable[[], Answer]) -> Response:
        """The answer in the format the path asks for; every refusal as Open311 errors
        (400, 403, 404 …, ``[{code, description}]``)."""
        headers: dict[str, str] = {}
        try:
            status, doc = answer()
        except Open311Error as exc:
            status, doc, headers = exc.status, exc.document(), exc.headers
        except ValidationError as exc:
            status, doc = 400, open311.bad_request(exc.messages).document()
        except ApiError as exc:  # from what the JSON API shares (a report_id in use: 409)
            status = 400 if exc.status in (409, 422) else exc.status
            doc = open311.bad_request(exc.errors, status=status).document()
        text, content_type = open311.render(doc, open311.format_of(request.path))
        return Response(text, status=status, headers=headers, content_type=content_type)


def _refusal(exc: AccessDenied) -> Open311Error:
    """The gate's refusal as Open311's: 403 for a missing, unknown or revoked key and for
    one outside its role or grid; 429 over its rate."""
    if exc.status == 429:
        return Open311Error(429, exc.reason,
                            headers={"Retry-After": str(max(1, round(exc.retry_after or 1)))})
    return Open311Error(403, f"api_key: {exc.reason}")
