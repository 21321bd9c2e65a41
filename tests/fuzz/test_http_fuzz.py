"""Fuzzing every HTTP endpoint of intake and escalation, on SQLite and PostgreSQL.

The services run in this process on the real broker and database. Before the fuzzing, the
whole pipeline makes a few cases in the states the endpoints act on (dispatched, an
extension pending, resolved with a verification task, a duplicate, closed with a follow-up
task); then routing and notify are stopped, so nothing but the fuzzed requests changes
intake's database (escalation runs its HTTP and RPC entrypoints only: the ledger).

Each endpoint gets bodies (random JSON, mutations of a valid body, bytes that are not
JSON), path parameters (known ids and odd ones) and query strings, as an admin (an API key
of its own, with no rate limit: the handlers are reached; ``/metrics`` with the scraper's
token). Every answer must be below 500; an answer of 4xx must leave intake's database
exactly as it was: no row added, none changed, nothing put in the outbox (so nothing
published). A few requests to each endpoint but ``/health`` carry no credential or a bad
one (garbage, an unknown or revoked key, a wrong secret or scheme, the other door's
token): each must be a 401 saying why, and leave the database as it was.

The table ``ENDPOINTS`` must name every route the services have: a new endpoint without
fuzzing fails ``test_every_http_endpoint_survives_fuzzing``.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import kombu
import pytest
import requests
from fuzz_strategies import (
    encode,
    fuzz_settings,
    json_values,
    mutated,
    odd_ids,
    odd_ints,
    path_segment,
    poisoned,
    query_strings,
    raw_bodies,
)
from fuzz_support import DbState, diff, new_case, post, resolve_all, settled, until
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import Schema
from nameko.testing.services import replace_dependencies, restrict_entrypoints
from nameko.testing.utils import find_free_port
from nameko.web.handlers import HttpRequestHandler

from services.escalation.service import EscalationService
from services.intake import bodies, reports
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared.clock import FakeClock
from shared.events import make_event
from shared.responses import ACTIONS
from support import DEMO_CELL, bearer, case_view, report

GRID_WORKER = {"name": "邓海燕", "tier": "compound", "code": DEMO_CELL}
COMMUNITY = {"name": "胡涛", "tier": "community", "code": "511802001001"}
STREET = {"name": "李娜", "tier": "street", "code": "511802001"}
PHOTO = ["https://img.example/site.jpg"]
DEPARTMENTS = ("urban_mgmt", "police", "housing", "sanitation", "fire", "justice", "gas")
GRID_CODES = ("511802", "511802001", "511802001001", DEMO_CELL, "511802001001101001",
              "999999999")
CASE_STATES = ("reported", "routed", "dispatched", "resolved", "closed", "duplicate")

Params = dict[str, st.SearchStrategy[Any]]


@dataclass(frozen=True)
class Spec:
    """How to fuzz one endpoint: valid bodies to mutate (and their schema, for the names of
    optional fields), the query keys it reads, and how many examples."""

    valid: tuple[dict[str, Any], ...] = ()
    schema: type[Schema] | None = None
    query: Params = field(default_factory=dict)
    examples: int = 40
    unauthorized: int = 6  # requests with no credential or a bad one (0: a public route)


_LIST_QUERY: Params = {
    "page": st.sampled_from(["1", "2", "100000"]),
    "per_page": st.sampled_from(["1", "20", "100"]),
}
ENDPOINTS: dict[tuple[str, str], Spec] = {
    # -- intake ---------------------------------------------------------------------------------
    ("POST", "/api/v1/reports"): Spec(
        valid=(report("fz-r1", "E0801"), report("fz-r2", "E0801", severity="urgent",
                                                  occurred_at="2026-11-23T00:30:00+00:00"),
               {**{k: v for k, v in report("fz-r3", "E0802").items() if k != "grid_code"},
                "lat": 29.9725, "lng": 102.9975},
               report("fz-r4", "E0801", media_urls=PHOTO)),
        schema=reports.ReportBody, examples=120),
    ("POST", "/api/v1/reports/bulk"): Spec(
        valid=({"reports": [report("fz-b1", "E0801"), report("fz-b2", "E0802")]},
               {"reports": [report("fz-b3", "E0801", severity="urgent"), {"x": 1}, 7]}),
        schema=reports.BulkBody, examples=60),
    ("POST", "/api/v1/cases/<case_id>/unlink"): Spec(
        valid=({"by": COMMUNITY, "reason": "不是同一处"},), schema=bodies.UnlinkBody),
    ("GET", "/api/v1/categories"): Spec(examples=15),
    ("GET", "/api/v1/grids"): Spec(query={"code": st.sampled_from(GRID_CODES),
                                          "depth": st.sampled_from(["0", "1", "10"])},
                                   examples=30),
    ("GET", "/api/v1/cases/<case_id>"): Spec(examples=30),
    ("GET", "/api/v1/cases"): Spec(query={
        "state": st.sampled_from(CASE_STATES), "grid": st.sampled_from(GRID_CODES),
        "department": st.sampled_from(DEPARTMENTS), **_LIST_QUERY}),
    ("POST", "/api/v1/cases/<case_id>/assignments/<department>/ack"): Spec(
        valid=({}, {"actor": "消防 王队", "note": "马上到"}), schema=bodies.AckBody),
    ("POST", "/api/v1/cases/<case_id>/assignments/<department>/resolve"): Spec(
        valid=({"note": "处理完毕", "media_urls": PHOTO},), schema=bodies.ResolveBody),
    ("POST", "/api/v1/cases/<case_id>/assignments/<department>/pause"): Spec(
        valid=({"reason": "等待配件", "actor": "王师傅"},), schema=bodies.PauseBody),
    ("POST", "/api/v1/cases/<case_id>/assignments/<department>/resume"): Spec(
        valid=({}, {"actor": "王师傅"}), schema=bodies.ResumeBody),
    ("POST", "/api/v1/cases/<case_id>/assignments/<department>/extensions"): Spec(
        valid=({"extend_by": "2d", "reason": "材料未到"}, {"extend_by": "4wh", "reason": "x"}),
        schema=bodies.ExtensionBody),
    ("POST", "/api/v1/cases/<case_id>/extensions/<int:extension_id>/decision"): Spec(
        valid=({"approved": True, "by": STREET}, {"approved": False, "by": STREET,
                                                   "note": "不同意"}),
        schema=bodies.DecisionBody),
    ("POST", "/api/v1/cases/<case_id>/assignments/<department>/reopen"): Spec(
        valid=({"by": COMMUNITY, "reason": "未清理干净"},), schema=bodies.ReopenBody),
    ("POST", "/api/v1/cases/<case_id>/whistle"): Spec(
        valid=({"level": "routine", "departments": ["housing"], "by": COMMUNITY,
                "reason": "需物业配合"},), schema=bodies.WhistleBody),
    ("GET", "/api/v1/supervision"): Spec(query={
        "state": st.sampled_from(["open", "closed"]),
        "tier": st.sampled_from(["community", "street", "district"]),
        "grid": st.sampled_from(GRID_CODES), "department": st.sampled_from(DEPARTMENTS),
        "case_id": st.sampled_from(["20261123-000001"]), "format": st.sampled_from(
            ["json", "csv"]), **_LIST_QUERY}, examples=30),
    ("GET", "/api/v1/supervision.csv"): Spec(query={
        "state": st.sampled_from(["open", "closed"]), "grid": st.sampled_from(GRID_CODES),
        "department": st.sampled_from(DEPARTMENTS)}, examples=20),
    ("GET", "/health"): Spec(examples=10, unauthorized=0),
    ("GET", "/metrics"): Spec(examples=10),  # Prometheus' text, for the scraper's token
    ("GET", "/api/v1/stats/funnel"): Spec(query={
        "grid": st.sampled_from(GRID_CODES), "department": st.sampled_from(DEPARTMENTS),
        "since": st.sampled_from(["2026-11-01T00:00:00+08:00", "2026-11-23", "yesterday"]),
        "until": st.sampled_from(["2026-12-01T00:00:00Z", "9999-12-31T23:59:59+14:00"])},
        examples=30),
    ("GET", "/api/v1/stats/measures"): Spec(query={
        "grid": st.sampled_from(GRID_CODES), "department": st.sampled_from(DEPARTMENTS),
        "since": st.sampled_from(["2026-11-01T00:00:00+08:00", "0001-01-01T00:00:00+00:00"]),
        "until": st.sampled_from(["2026-12-01T00:00:00Z", "2026-11-01T00:00:00Z"]),
        "top": st.sampled_from(["1", "50", "0", "-3", "x"])}, examples=30),
    ("POST", "/api/v1/cases/<case_id>/assignments/<department>/progress"): Spec(
        valid=({"note": "已到场", "media_urls": PHOTO},), schema=bodies.ProgressBody),
    ("POST", "/api/v1/cases/<case_id>/assignments/<department>/return"): Spec(
        valid=({"reason_code": "not_our_responsibility", "note": "非本部门职责"},),
        schema=bodies.ReturnBody),
    ("POST", "/api/v1/cases/<case_id>/assignments"): Spec(
        valid=({"department": "urban_mgmt", "by_department": "fire", "note": "需执法配合"},
               {"department": "housing", "role": "assist", "by": COMMUNITY}),
        schema=bodies.RequestDepartmentBody),
    ("POST", "/api/v1/cases/<case_id>/verification"): Spec(
        valid=({"passed": True, "by": GRID_WORKER, "media_urls": PHOTO},
               {"passed": False, "by": GRID_WORKER, "media_urls": PHOTO, "note": "没扫干净",
                "rework": ["sanitation"]}),
        schema=bodies.VerificationBody),
    ("POST", "/api/v1/cases/<case_id>/rating"): Spec(
        valid=({"score": 5, "fixed": True, "comment": "满意"}, {"score": 1}),
        schema=bodies.RatingBody),
    ("GET", "/api/v1/tasks"): Spec(query={
        "assignee": st.sampled_from(GRID_CODES), "state": st.sampled_from(["open", "done"]),
        "kind": st.sampled_from(["verification", "follow_up"]), **_LIST_QUERY}),
    ("POST", "/api/v1/tasks/<int:task_id>/done"): Spec(
        valid=({"by": GRID_WORKER, "note": "已回访"},), schema=bodies.TaskDoneBody),
    ("GET", "/api/v1/departments/stats"): Spec(examples=10),
    ("GET", "/api/v1/public/cases/<case_id>"): Spec(examples=30),
    # the API's own description (OpenAPI, and its page): public
    ("GET", "/api/v1/openapi.json"): Spec(examples=10, unauthorized=0),
    ("GET", "/api/v1/docs"): Spec(examples=10, unauthorized=0),
    # -- Open311 GeoReport v2: public, each in both formats (POST takes its api_key in a form)
    **{(method, f"/open311/v2/{path}.{fmt}"): Spec(query=query, examples=15, unauthorized=0)
       for method, path, query in (
           ("GET", "discovery", {}), ("GET", "services", {}),
           ("GET", "services/<service_code>", {}), ("POST", "requests", {}),
           ("GET", "requests", {
               "service_request_id": st.sampled_from(["20261123-000001", ",,", "x,y"]),
               "service_code": st.sampled_from(["E0101", "E0402,C0601", "X9"]),
               "status": st.sampled_from(["open", "closed", "open,closed", "x"]),
               "start_date": st.sampled_from(["2026-11-01T00:00:00Z", "1970-01-01T00:00:00Z",
                                              "yesterday"]),
               "end_date": st.sampled_from(["2026-12-01T00:00:00+08:00", "2199-12-31T00:00Z"]),
               "page": st.sampled_from(["1", "2", "0", "100000"]),
               "page_size": st.sampled_from(["1", "100", "101"]),
               "jurisdiction_id": st.sampled_from(["511802", "city.gov", ""])}),
           ("GET", "requests/<case_id>", {}), ("GET", "tokens/<token>", {}))
       for fmt in ("json", "xml")},
    # -- intake, for admins: API keys and the audit log
    ("POST", "/api/v1/keys"): Spec(
        valid=({"client": "fuzz patrol app", "role": "patrol_app", "grid": DEMO_CELL},
               {"client": "fuzz fire system", "role": "department", "department": "fire",
                "rate_per_min": 60, "note": "模糊测试"},
               {"client": "fuzz operator", "role": "operator", "grid": "511802001"},
               {"client": "fuzz admin", "role": "admin", "rate_per_min": 0}),
        schema=bodies.IssueKeyBody, examples=60),
    ("GET", "/api/v1/keys"): Spec(query={
        "revoked": st.sampled_from(["true", "false", "1", "0", "yes", "maybe"])}, examples=20),
    ("POST", "/api/v1/keys/<key_id>/revoke"): Spec(examples=30),  # the victims' keys only
    ("GET", "/api/v1/audit"): Spec(query={
        "key_id": st.sampled_from(["0123456789ab", "x" * 17]),
        "actor": st.sampled_from(["tests", "fuzz admin", "x" * 121]),
        "action": st.sampled_from(["post_report", "issue_key", "revoke_key", "ack"]),
        "target": st.sampled_from(["20261123-000001", ""]),
        "outcome": st.sampled_from(["done", "denied", "maybe"]),
        "since": st.sampled_from(["2026-11-01T00:00:00+08:00", "2026-11-23", "yesterday"]),
        "until": st.sampled_from(["2099-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00"]),
        "page": st.sampled_from(["1", "2", "100000", "100001", "0"]),
        "per_page": st.sampled_from(["1", "100", "500", "501"])}, examples=40),
}
ESCALATION_ENDPOINTS: dict[tuple[str, str], Spec] = {
    ("GET", "/health"): Spec(examples=25, unauthorized=0),
    ("GET", "/metrics"): Spec(examples=10),
}


# -- the services and the cases the fuzzing starts from ---------------------------------------
@dataclass
class World:
    api: requests.Session  # intake's, for paths
    intake_url: str
    escalation_url: str
    state: Any  # DbState of intake
    case_ids: list[str]
    extension_ids: list[int]
    task_ids: list[int]
    key_ids: list[str]  # keys the fuzzing may revoke: never the ones it uses
    routes: dict[str, set[tuple[str, str]]]  # (method, url rule) of every HTTP entrypoint
    admin: dict[str, str]  # the fuzzing's own admin key, as a header
    metrics: dict[str, str]  # the scraper's token, as a header
    bad: tuple[dict[str, str], ...]  # headers with no credential, or one to refuse
    last: Any = None  # intake's database after the last request, when known

    def auth(self, rule: str) -> dict[str, str]:
        """The credential a request to ``rule`` carries (the scraper's token on /metrics)."""
        return self.metrics if rule == "/metrics" else self.admin


def _bad_credentials(admin: str, metrics: str, revoked: str) -> tuple[dict[str, str], ...]:
    """No credential, or one refused with a 401 wherever it is sent (the API keys' door
    and the scraper's alike)."""
    key_id = admin.split("_")[1]
    unknown = f"gfk_{'0' * 12}_{'A' * 43}"
    return (
        {}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer   "},
        {"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}, {"Authorization": "Bearer garbage"},
        {"Authorization": "Bearer gfk_"}, {"Authorization": f"Bearer {unknown}"},
        {"Authorization": f"Bearer gfk_{key_id}_{'B' * 43}"},  # a known key, a wrong secret
        {"Authorization": f"Bearer {revoked}"}, {"X-Api-Key": revoked},
        {"X-Api-Key": "garbage"}, {"Authorization": f"Token {admin}"},  # a wrong scheme
        {"Authorization": "Bearer " + "A" * 3000},
        {"Authorization": f"Bearer {admin}x"}, {"Authorization": f"Bearer {metrics}x"},
    )


@pytest.fixture
def world(
    run_services: Any, container_factory: Any, service_config: dict[str, Any], api: Any,
    http_port: int, rabbit_config: dict[str, Any],
) -> World:
    clock = FakeClock()
    port = find_free_port()
    escalation = container_factory(
        EscalationService, {**service_config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"})
    routes = {"escalation": _routes(escalation)}  # all of them, before they are restricted
    restrict_entrypoints(escalation, "ledger", "audit_report", "health",  # no clocks, events
                         "metrics_page")
    replace_dependencies(escalation, clock=clock)
    escalation.start()
    up = run_services(IntakeService, RoutingService, NotifyService, clock=clock)
    routes["intake"] = _routes(up["intake"])
    intake_state = DbState(up["intake"])

    dispatched = new_case(api, "fz-a", "E0402")  # fire leads, police and urban_mgmt assist
    resolved = new_case(api, "fz-b", "E0101")  # sanitation
    resolve_all(api, resolved)
    duplicate = post(api, "/api/v1/reports", report("fz-d", "E0101"), 201)
    assert duplicate["duplicate_of"] == resolved["case_id"]
    pending = new_case(api, "fz-c", "E0701")  # justice and police
    base = f"/api/v1/cases/{pending['case_id']}/assignments/justice"
    post(api, f"{base}/ack", {})
    extension = post(api, f"{base}/extensions", {"extend_by": "2d", "reason": "材料未到"},
                      201)["extension"]
    closed = new_case(api, "fz-f", "C0601")  # police
    resolve_all(api, closed)
    post(api, f"/api/v1/cases/{closed['case_id']}/verification",
          {"passed": True, "by": GRID_WORKER, "media_urls": PHOTO})
    clock.advance(timedelta(minutes=5))
    due = make_event("followup.due", closed["case_id"],
                     {"due_at": clock.now(), "grid_code": DEMO_CELL},
                     producer="escalation", at=clock.now())
    with kombu.Connection(rabbit_config["AMQP_URI"]) as conn:
        conn.Producer().publish(due.to_json(), exchange="", routing_key="gridflow.intake",
                                message_id=due.event_id, type=due.type,
                                content_type="application/json")
    closed = until(api, closed["case_id"], lambda c: any(
        t["kind"] == "follow_up" for t in c.get("tasks", [])))
    settled([intake_state, DbState(up["routing"]), DbState(up["notify"])])
    for name in ("routing", "notify"):
        up[name].kill()
    settled([intake_state], quiet_s=0.3)

    case_ids = [c["case_id"] for c in (dispatched, resolved, pending, closed)]
    case_ids.append(duplicate["case_id"])
    # the fuzzing's own admin key (no rate limit: hypothesis is quick), keys it may revoke,
    # and one revoked already
    admin = api.key("admin", rate_per_min=0)
    victims = [post(api, "/api/v1/keys", {"client": f"victim {n}", "role": "patrol_app"},
                    201)["key"]["key_id"] for n in range(2)]
    revoked = post(api, "/api/v1/keys", {"client": "revoked", "role": "operator"}, 201)
    post(api, f"/api/v1/keys/{revoked['key']['key_id']}/revoke", {})
    metrics = service_config["GRIDFLOW_METRICS_TOKEN"]
    settled([intake_state], quiet_s=0.3)
    return World(
        api=api,
        intake_url=f"http://127.0.0.1:{http_port}",
        escalation_url=f"http://127.0.0.1:{port}",
        state=intake_state,
        case_ids=case_ids,
        extension_ids=[extension["id"]],
        task_ids=[t["id"] for c in (resolved, closed) for t in case_view(api, c["case_id"])
                  .get("tasks", [])],
        key_ids=victims,
        routes=routes,
        admin=bearer(admin),
        metrics=bearer(metrics),
        bad=_bad_credentials(admin, metrics, revoked["token"]),
    )


def _routes(container: Any) -> set[tuple[str, str]]:
    return {(ep.method, ep.url) for ep in container.entrypoints
            if isinstance(ep, HttpRequestHandler)}


# -- building requests ------------------------------------------------------------------------
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def _param_strategy(name: str, world: World, odd: bool) -> st.SearchStrategy[str]:
    known: list[Any] = {
        "case_id": world.case_ids,
        "department": [*DEPARTMENTS, *ACTIONS],
        "extension_id": world.extension_ids,
        "task_id": world.task_ids,
        "key_id": world.key_ids,
        "service_code": ["E0402", "C0101"],  # Open311's
        "token": ["o311-" + "0" * 32],
    }[name]
    known_values = st.sampled_from([str(k) for k in known])
    if not odd:
        return known_values
    return st.one_of(known_values, odd_ints() if name in ("extension_id", "task_id")
                     else odd_ids())


def _body_strategy(spec: Spec, mode: str) -> st.SearchStrategy[Any]:
    """``valid``: a valid body, or one whose values (not shape) are odd; ``fuzzed``: a valid
    body mutated, or any JSON, or bytes."""
    names = tuple(spec.schema().fields) if spec.schema else ()
    if not spec.valid:
        return st.one_of(st.none(), st.none(), raw_bodies(), json_values())
    valid = st.sampled_from(spec.valid)
    if mode == "valid":
        return st.one_of(valid, valid.flatmap(poisoned), valid.flatmap(poisoned))
    return st.one_of(
        valid.flatmap(lambda v: mutated(v, names)),
        valid.flatmap(lambda v: mutated(v, names)),
        valid.flatmap(poisoned),
        json_values(),
        raw_bodies(),
        st.none(),
    )


CONTENT_TYPES = ("application/json", "application/json; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded", None, "application/json; charset=latin-1")


@st.composite
def requests_for(draw: Any, method: str, rule: str, spec: Spec, world: World) -> Req:
    # odd path values with a good body; good path values with an odd body; or both odd
    mode = draw(st.sampled_from(["odd path", "odd body", "odd values", "odd values", "both"]))
    path = rule
    for m in _PARAM.finditer(rule):
        value = draw(_param_strategy(m.group(2), world, odd=mode in ("odd path", "both")))
        path = path.replace(m.group(0), path_segment(value), 1)
    query = draw(st.one_of(st.just(""), query_strings(spec.query)))
    if spec.query and draw(st.booleans()):
        query = draw(query_strings(spec.query))
    body = draw(_body_strategy(spec, "valid" if mode in ("odd path", "odd values")
                               else "fuzzed"))
    data: Any = None
    if isinstance(body, bytes):
        data = body
    elif body is not None:
        data = encode(body, ascii_only=draw(st.booleans()))
    headers = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type and data is not None:
        headers["Content-Type"] = content_type
    if data is not None and len(data) < 5000 and draw(st.sampled_from([False] * 9 + [True])):
        chunks = [data[i:i + 7] for i in range(0, len(data), 7)]
        data = iter(chunks)  # Transfer-Encoding: chunked
    verb = draw(st.sampled_from([method] * 19 + ["PUT", "DELETE", "PATCH", "GET", "POST"]))
    headers.update(world.auth(rule))
    return Req(verb, f"{path}?{query}" if query else path, data, headers)


@st.composite
def unauthorized_for(draw: Any, method: str, rule: str, spec: Spec, world: World) -> Req:
    """A request the gate must stop: the route's own method and known path values (what
    routing lets through to the gate), any query, a small body; no credential or a bad
    one."""
    path = rule
    for m in _PARAM.finditer(rule):
        path = path.replace(m.group(0), path_segment(draw(_param_strategy(m.group(2), world,
                                                                          odd=False))), 1)
    query = draw(st.one_of(st.just(""), query_strings(spec.query).filter(
        lambda q: len(q) < 2000)))
    body = draw(st.one_of(st.none(), st.sampled_from(spec.valid or ({},)), json_values()))
    # and each door's own credential at the other: an API key is no scraper's token
    headers = draw(st.sampled_from([*world.bad, world.admin if rule == "/metrics"
                                    else world.metrics]))
    data = None
    if body is not None:
        data = encode(body, ascii_only=draw(st.booleans()))
        headers = {**headers, "Content-Type": "application/json"}
    return Req(method, f"{path}?{query}" if query else path, data, headers)


@dataclass
class Req:
    method: str
    url: str
    data: Any
    headers: dict[str, str]

    def __repr__(self) -> str:  # what hypothesis shows of a failing example: not 200 KB
        data = self.data if isinstance(self.data, bytes | None) else b"<chunked>"
        shown = data if data is None or len(data) <= 400 else data[:200] + b"..." + data[-100:]
        url = self.url if len(self.url) <= 400 else self.url[:300] + "..."
        return f"Req({self.method} {url} headers={self.headers} body={shown!r} " \
               f"({len(data or b'')} bytes))"


def _send(world: World, req: Req, base: str, seen: Counter) -> tuple[Any, Any, str]:
    """The answer to ``req``, the database's state before it, and the request as shown."""
    # nothing but the fuzzed requests writes intake's database: the state after one request
    # is the state before the next
    before = world.last if world.last is not None else world.state()
    world.last = None
    with requests.Session() as http:
        r = http.request(req.method, f"{base}{req.url}", data=req.data, headers=req.headers,
                         timeout=30)
    seen[r.status_code] += 1
    return r, before, repr(req)


def _check(world: World, req: Req, base: str, seen: Counter) -> None:
    r, before, shown = _send(world, req, base, seen)
    assert r.status_code < 500, (shown, r.status_code, r.text[:1000])
    assert "Traceback" not in r.text, (shown, r.text[:1000])
    if r.headers.get("Content-Type", "").startswith("application/json"):
        payload = r.json()  # well-formed JSON, whatever the input
        if r.status_code >= 400 and isinstance(payload, list):  # Open311's [{code, description}]
            assert req.url.startswith("/open311/") and payload and all(
                set(e) == {"code", "description"} for e in payload), (shown, payload)
        elif r.status_code >= 400:
            assert isinstance(payload.get("errors"), dict), (shown, payload)
    if r.status_code >= 400:
        after = world.state()
        assert after == before, (shown, r.status_code, r.text[:500], diff(before, after))
        world.last = after


# GRIDFLOW_FUZZ_KEEP_GOING=1: collect every failure of a run (unshrunk) instead of stopping
# at the first; for finding several bugs at once.
KEEP_GOING = bool(os.environ.get("GRIDFLOW_FUZZ_KEEP_GOING"))
# GRIDFLOW_FUZZ_STATS=1 (with -s): print what answers each endpoint gave
STATS = bool(os.environ.get("GRIDFLOW_FUZZ_STATS"))
failures: list[str] = []


def _check_refused(world: World, req: Req, base: str, seen: Counter) -> None:
    """No credential or a bad one: a 401 with its reason, nothing kept, no worker run."""
    r, before, shown = _send(world, req, base, seen)
    assert r.status_code == 401, (shown, r.status_code, r.text[:1000])
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), (shown, r.headers)
    reason = r.json()["errors"]["_auth"]
    assert reason and all(isinstance(t, str) and t for t in reason), (shown, r.text[:500])
    after = world.state()
    assert after == before, (shown, r.status_code, r.text[:500], diff(before, after))
    world.last = after


def _fuzz(world: World, method: str, rule: str, spec: Spec, base: str, *,
          unauthorized: bool = False) -> Counter:
    seen: Counter = Counter()
    check = _check_refused if unauthorized else _check
    strategy = (unauthorized_for if unauthorized else requests_for)(method, rule, spec, world)

    @fuzz_settings(spec.unauthorized if unauthorized else spec.examples)
    @given(strategy)
    def run(req: Req) -> None:
        if KEEP_GOING:
            try:
                check(world, req, base, seen)
            except AssertionError as exc:
                failures.append(f"{method} {rule}{' (unauthorized)' if unauthorized else ''}: "
                                f"{str(exc)[:1500]}")
            return
        check(world, req, base, seen)

    run()
    return seen


def test_every_http_endpoint_survives_fuzzing(world: World) -> None:
    routes = world.routes
    assert routes["intake"] == set(ENDPOINTS), (
        "fuzz these intake routes too (or drop the gone ones from ENDPOINTS): "
        f"{sorted(routes['intake'] ^ set(ENDPOINTS))}")
    assert routes["escalation"] == set(ESCALATION_ENDPOINTS), (
        f"fuzz these escalation routes: {sorted(routes['escalation'] ^ set(ESCALATION_ENDPOINTS))}")
    failures.clear()
    statuses: dict[str, Counter] = {}
    for service, endpoints, base in (("intake", ENDPOINTS, world.intake_url),
                                     ("escalation", ESCALATION_ENDPOINTS, world.escalation_url)):
        for (method, rule), spec in endpoints.items():
            statuses[f"{service} {method} {rule}"] = _fuzz(world, method, rule, spec, base)
            if spec.unauthorized:
                statuses[f"{service} {method} {rule} (unauthorized)"] = _fuzz(
                    world, method, rule, spec, base, unauthorized=True)
    if STATS:
        for name, seen in statuses.items():
            print(f"{name}: {dict(sorted(seen.items()))}")
    assert not failures, "\n\n".join(failures)
    # the valid requests got through too: the fuzzing reached the handlers' rules (the admin
    # key opened every route; the scraper's token the metrics)
    assert any(200 <= s < 300 for c in statuses.values() for s in c), statuses
    for service in ("intake", "escalation"):
        assert statuses[f"{service} GET /metrics"][200], statuses[f"{service} GET /metrics"]
    # and the services still work: a new report is taken
    r = world.api.post("/api/v1/reports", json=report("fz-after", "E0801"))
    assert r.status_code == 201, r.text
    assert json.loads(r.text)["state"] == "reported"
