"""Fuzzing every HTTP endpoint of the operators' monitor, on SQLite and PostgreSQL.

The monitor runs in this process on the real broker and database, with intake and
escalation behind its RPC routes (the funnel, the measures, the cases and the ledger).
Before the fuzzing the whole pipeline dispatches two cases (so escalation's ledger has
items); then routing and notify are stopped, and a few dead letters are parked: two that a
department's system rejected (RabbitMQ's ``x-death``), the others published to
``gridflow.dlx`` with gridflow's own headers (one not JSON, one with odd headers). The
replay and discard routes park more whenever fewer than ``MIN_PARKED`` are left, so their
fuzzing keeps acting on real letters.

Each route is fuzzed logged in (the operator's session cookie): bodies (random JSON,
mutations of a valid body, bytes that are not JSON), path values (known ids and odd ones;
static file names that try to leave the web folder) and query strings. Every answer must be
below 500 and an answer of 4xx must leave the monitor's tables as they were, save one thing:
a refused login (401 from ``POST /api/login``) records exactly one ``login_failed`` audit
entry, on purpose. A sample of each route is sent logged out (no cookie, a forged, expired
or tampered one): a route behind the login must answer 401, whatever the body.
The ``instances`` table is left out of the comparison: heartbeats write it all the time.

The table ``ENDPOINTS`` must name every route the monitor has: a new endpoint without
fuzzing fails ``test_every_monitor_endpoint_survives_fuzzing``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote

import kombu
import pytest
import requests
from fuzz_strategies import (
    BAD_DATES,
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
from fuzz_support import DbState, diff, new_case, settled
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import Schema
from nameko.web.handlers import HttpRequestHandler
from sqlalchemy import func, select

from services.escalation.service import EscalationService
from services.intake.service import IntakeService
from services.monitor import auth, bodies
from services.monitor.service import COOKIE, WEB, Console, MonitorService
from services.monitor.store import AuditEntry, DeadLetterRow
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared.amqp import topology as topo
from shared.extensions.http import MAX_INT_PARAM
from support import wait_for

OPERATOR, PASSWORD = "operator", "night-shift"
# Operators are configured text: one whose name JSON must escape
ODD_OPERATOR, ODD_PASSWORD = '值班"员\\', "夜班 pass"
MONITOR_CONFIG = {
    "GRIDFLOW_MONITOR_COLLECT_S": 0.2,
    "GRIDFLOW_MONITOR_SAMPLE_S": 0.3,
    "GRIDFLOW_MONITOR_USERS": f"{OPERATOR}:{PASSWORD},{ODD_OPERATOR}:{ODD_PASSWORD}",
}
QUEUES = ("dispatch.fire", "gridflow.routing", "dispatch.fire.dlq", "gridflow.nowhere")
DEPARTMENTS = ("sanitation", "justice", "police", "fire", "nowhere")
GRID_CODES = ("511802", "511802001", "511802001001", "511802001001101", "999999999")
TIERS = (*bodies.TIERS, "unrouted")
MIN_PARKED = 4  # the replay and discard routes park more letters below this
KNOWN_LETTERS = 80  # ids 1..80: the first ones parked at the start, later ones restocked
WEB_FILES = {p.name: p.read_bytes() for p in WEB.iterdir() if p.is_file()}

Params = dict[str, st.SearchStrategy[Any]]


@dataclass(frozen=True)
class Spec:
    """How to fuzz one route: valid bodies to mutate (and their schema, for the names of
    optional fields), the query keys it reads, how many examples logged in and logged out,
    and whether it answers without a session."""

    valid: tuple[dict[str, Any], ...] = ()
    schema: type[Schema] | None = None
    query: Params = field(default_factory=dict)
    examples: int = 30
    anonymous: int = 6
    public: bool = False


_INSTANTS = st.sampled_from(["2026-11-01T00:00:00+08:00", "2026-11-23T00:00:00Z",
                             "2099-01-01T00:00:00+00:00", *(d for d in BAD_DATES
                                                            if isinstance(d, str))])
_PAGE: Params = {"limit": st.sampled_from(["1", "50", "200"]),
                 "offset": st.sampled_from(["0", "3", "10000000"])}
_STATS: Params = {"since": _INSTANTS, "until": _INSTANTS, "grid": st.sampled_from(GRID_CODES),
                  "department": st.sampled_from(DEPARTMENTS)}
LOGIN = {"name": OPERATOR, "password": PASSWORD}

ENDPOINTS: dict[tuple[str, str], Spec] = {
    ("POST", "/api/login"): Spec(
        valid=(LOGIN, {"name": OPERATOR, "password": "wrong"},
               {"name": ODD_OPERATOR, "password": ODD_PASSWORD},
               {"name": "nobody", "password": PASSWORD}),
        schema=bodies.LoginBody, examples=50, anonymous=10, public=True),
    ("POST", "/api/logout"): Spec(examples=10, public=True),
    ("GET", "/api/me"): Spec(examples=10),
    ("GET", "/api/queues"): Spec(examples=10),
    ("GET", "/api/services"): Spec(examples=10),
    ("GET", "/api/dead-letters"): Spec(query={
        "state": st.sampled_from(["parked", "replayed", "discarded", "all"]),
        "queue": st.sampled_from(QUEUES), **_PAGE}, examples=40),
    ("POST", "/api/dead-letters/replay"): Spec(
        valid=({"ids": [1]}, {"ids": [3, 2, 40]}, {"all": True},
               {"all": True, "queue": "dispatch.fire"}, {"ids": [5], "queue": "gridflow.routing"}),
        schema=bodies.ReplayBody, examples=80, anonymous=10),
    ("POST", "/api/dead-letters/discard"): Spec(
        valid=({"ids": [4], "reason": "演练数据, not a real case"},
               {"ids": [6, 7], "reason": "dup"},
               {"all": True, "queue": "gridflow.routing", "reason": "test data"}),
        schema=bodies.DiscardBody, examples=60, anonymous=10),
    # after the replays and discards: letters in every state, more of them
    ("GET", "/api/dead-letters/<int:letter_id>"): Spec(examples=40),
    ("GET", "/api/audit"): Spec(query=_PAGE, examples=20),
    ("GET", "/api/funnel"): Spec(query=_STATS, examples=40),
    ("GET", "/api/measures"): Spec(query={**_STATS,
                                          "top": st.sampled_from(["1", "50", "0", "-3", "x"])},
                                  examples=40),
    ("GET", "/api/cases"): Spec(query={
        **_STATS, **_PAGE, "state": st.sampled_from(["open", "reported", "dispatched",
                                                     "closed", "nonsense"]),
        "tier": st.sampled_from(TIERS)}, examples=40),
    ("GET", "/api/cases/<case_id>"): Spec(examples=40),
    ("GET", "/api/ledger"): Spec(query={
        "state": st.sampled_from(["open", "closed"]), "tier": st.sampled_from(TIERS),
        "grid": st.sampled_from(GRID_CODES), "department": st.sampled_from(DEPARTMENTS),
        "page": st.sampled_from(["1", "2", "100000"]),
        "per_page": st.sampled_from(["1", "50", "200"])}, examples=40),
    ("GET", "/api/reference"): Spec(examples=10),
    ("GET", "/"): Spec(examples=10, public=True),
    ("GET", "/static/<name>"): Spec(examples=60, anonymous=10, public=True),
    ("GET", "/health"): Spec(examples=10, public=True),
    ("GET", "/metrics"): Spec(examples=10, public=True),  # the scraper's token, not a login
}
RESTOCKED = ("/api/dead-letters/replay", "/api/dead-letters/discard")

# Static names that try to leave services/monitor/web, as raw (already encoded) segments.
STATIC_ODD = (
    "..%2F..%2Fservice.py", "..%2Fservice.py", "%2E%2E%2Fservice.py",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252F..%252Fservice.py", "..%5C..%5Cservice.py", "%2Fetc%2Fpasswd", "..", "%2E%2E",
    ".hidden", ".", "...", "%2E", ".index.html", "index.html%00", "index.html%00.png", "a%00b",
    "%00", "service.py", "__init__.py", "web", "%ED%A0%80", "index.HTML", "app.js.", "~",
    "index.html%2F", "%C0%AE%C0%AE%2Fservice.py", "style.css%20", "app.js%3F", "app.js%23x",
)


# -- the services and the dead letters the fuzzing starts from -------------------------------
@dataclass
class World:
    base: str  # the monitor's
    state: DbState  # of the monitor, heartbeats (instances) left out
    parked: Callable[[], int]
    park: Callable[[int], None]
    cookie: str
    anonymous: tuple[str | None, ...]  # cookies of nobody
    case_ids: list[str]
    routes: set[tuple[str, str]]
    metrics_token: str  # what /metrics takes, as 'Authorization: Bearer'
    last: Any = None  # the monitor's tables after the last request, when known


def _routes(container: Any) -> set[tuple[str, str]]:
    return {(ep.method, ep.url) for ep in container.entrypoints
            if isinstance(ep, HttpRequestHandler)}


def _publish_dead(producer: Any, n: int, body: bytes | str = b'{"type": "case.reported"}',
                  **headers: Any) -> None:
    """A dead letter as gridflow's consumers park one: into gridflow.dlx with its headers."""
    producer.publish(body, exchange=topo.DLX, routing_key="gridflow.routing",
                     message_id=f"mf-{n}", type="case.reported", delivery_mode=2,
                     content_type="application/json", headers={
                         topo.H_REASON: f"PoisonEvent: fuzz letter {n}",
                         topo.H_QUEUE: "gridflow.routing", topo.H_SERVICE: "routing",
                         topo.H_EXCHANGE: "gridflow.events",
                         topo.H_ROUTING_KEY: "case.reported",
                         topo.H_FAILED_AT: "2026-11-23T01:00:00+00:00", **headers})


def _reject_dispatch(uri: str, n: int) -> None:
    """A message a department's system refused: RabbitMQ dead-letters it (x-death)."""
    with kombu.Connection(uri) as conn:
        conn.Producer().publish(json.dumps({"type": "case.assigned", "case_id": f"x-{n}"}),
                                exchange=topo.DISPATCH_EXCHANGE,
                                routing_key="fire.case.assigned", message_id=f"mf-fire-{n}",
                                type="case.assigned", content_type="application/json",
                                delivery_mode=2, headers={"schema_version": 1})
        channel = conn.channel()
        msg = wait_for(lambda: channel.basic_get("dispatch.fire", no_ack=False),
                       what="the dispatch")
        channel.basic_reject(msg.delivery_tag, requeue=False)


@pytest.fixture
def world(run_services: Any, service_config: dict[str, Any], api: Any,
          rabbit_config: dict[str, Any]) -> Iterator[World]:
    uri = rabbit_config["AMQP_URI"]
    up = run_services(IntakeService, RoutingService, NotifyService, EscalationService)
    monitor = run_services(MonitorService, config={**service_config, **MONITOR_CONFIG})["monitor"]
    case_ids = [new_case(api, "mf-a", "E0101")["case_id"],  # sanitation
                new_case(api, "mf-b", "E0701")["case_id"]]  # justice and police
    settled([DbState(up[n]) for n in ("intake", "routing", "notify", "escalation")])
    for name in ("routing", "notify"):  # nothing consumes what a replay sends back
        up[name].kill()

    state = DbState(monitor, ignore=("instances",))
    engine = state.engine

    def parked() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(DeadLetterRow)
                               .where(DeadLetterRow.state == "parked")) or 0

    conn = kombu.Connection(uri)
    producer = conn.Producer()
    published = [0]

    def park(n: int) -> None:
        want = parked() + n
        for _ in range(n):
            published[0] += 1
            _publish_dead(producer, published[0])
        wait_for(lambda: parked() >= want, what=f"{want} dead letters parked")

    for n in range(2):
        _reject_dispatch(uri, n)
    park(2)
    published[0] += 1
    _publish_dead(producer, published[0], b"\xff\xfe not JSON \x00", **{
        "x-odd": [b"bytes", 1.5, None, {"nested": True}], topo.H_FAILED_AT: "yesterday"})
    published[0] += 1
    _publish_dead(producer, published[0], json.dumps({"type": "x", "blob": "中" * 70_000}))
    wait_for(lambda: parked() >= 6, what="the dead letters collected")
    settled([state], quiet_s=0.3)

    base = f"http://{monitor.config['WEB_SERVER_ADDRESS']}"
    r = requests.post(f"{base}/api/login", json=LOGIN, timeout=10)
    assert r.status_code == 200, r.text
    cookie = r.cookies[COOKIE]
    secret = next(d for d in monitor.dependencies if isinstance(d, Console)).secret
    tampered = cookie[:-1] + ("A" if cookie[-1] != "A" else "B")
    anonymous = (None, "", "garbage", "x.y", "..", tampered,
                 auth.issue_token(b"not the secret", OPERATOR),
                 auth.issue_token(secret, OPERATOR, now=time.time() - 13 * 3600))
    yield World(base=base, state=state, parked=parked, park=park, cookie=cookie,
                anonymous=anonymous, case_ids=case_ids, routes=_routes(monitor),
                metrics_token=service_config["GRIDFLOW_METRICS_TOKEN"])
    conn.release()


# -- building requests ------------------------------------------------------------------------
_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def _param_strategy(name: str, world: World, odd: bool) -> st.SearchStrategy[str]:
    """Encoded path segments: known values, or (``odd``) anything."""
    if name == "letter_id":
        known = st.integers(1, KNOWN_LETTERS).map(str)
        return st.one_of(known, odd_ints().map(path_segment)) if odd else known
    if name == "case_id":
        known = st.sampled_from([*world.case_ids, "20991231-999999"])
        return st.one_of(known, odd_ids().map(path_segment)) if odd else known
    assert name == "name", name
    known = st.sampled_from(sorted(WEB_FILES))
    if not odd:
        return known
    return st.one_of(known, st.sampled_from(STATIC_ODD), odd_ids().map(path_segment))


def _passes_door(segment: str, converter: str | None) -> bool:
    """Whether routing and the door (``json_http``) let this path value through to the
    handler: what a request logged out must get a 401 for."""
    value = unquote(segment, errors="replace")
    if converter == "int":
        return value.isascii() and value.isdigit() and int(value) <= MAX_INT_PARAM
    return value not in ("", ".", "..") and "/" not in value and "\x00" not in value


def _body_strategy(spec: Spec, mode: str) -> st.SearchStrategy[Any]:
    """``valid``: a valid body, or one whose values (not shape) are odd; ``fuzzed``: a valid
    body mutated, or any JSON, or bytes."""
    if not spec.valid:
        return st.one_of(st.none(), st.none(), raw_bodies(), json_values())
    names = tuple(spec.schema().fields) if spec.schema else ()
    valid = st.sampled_from(spec.valid)
    if mode == "valid":
        return st.one_of(valid, valid, valid.flatmap(poisoned))
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


@dataclass
class Req:
    method: str
    url: str
    data: Any
    headers: dict[str, str]
    cookie: str | None
    anonymous: bool

    def __repr__(self) -> str:  # what hypothesis shows of a failing example: not 200 KB
        data = self.data if isinstance(self.data, bytes | None) else b"<chunked>"
        shown = data if data is None or len(data) <= 400 else data[:200] + b"..." + data[-100:]
        url = self.url if len(self.url) <= 400 else self.url[:300] + "..."
        who = "logged out, cookie " + repr(self.cookie)[:40] if self.anonymous else "logged in"
        return f"Req({self.method} {url} {who} headers={self.headers} body={shown!r} " \
               f"({len(data or b'')} bytes))"


def requests_for(method: str, rule: str, spec: Spec, world: World,
                 anonymous: bool) -> st.SearchStrategy[Req]:
    """Requests for one route. Logged in: odd path values with a good body, good path values
    with an odd body, or both odd. Logged out: what passes the door, with any body: the
    login stops it."""
    params = []  # (placeholder, good values, odd values)
    for m in _PARAM.finditer(rule):
        good, odd = (_param_strategy(m.group(2), world, o) for o in (False, True))
        if anonymous:
            good, odd = (s.filter(partial(_passes_door, converter=m.group(1)))
                         for s in (good, odd))
        params.append((m.group(0), good, odd))
    queries = query_strings(spec.query)
    if anonymous:  # a NUL in the query is refused at the door, before the login is asked
        queries = queries.filter(lambda q: "%00" not in q.lower() and len(q) < 4000)
    maybe_query = st.one_of(st.just(""), queries)
    bodies_ = {mode: _body_strategy(spec, mode) for mode in ("valid", "fuzzed")}
    verbs = st.sampled_from([method] * 19 + ["PUT", "DELETE", "PATCH", "GET", "POST", "HEAD",
                                             "OPTIONS"])

    @st.composite
    def build(draw: Any) -> Req:
        mode = draw(st.sampled_from(["odd path", "odd body", "odd values", "odd values",
                                     "both"]))
        path = rule
        for placeholder, good, odd in params:
            path = path.replace(placeholder, draw(odd if mode in ("odd path", "both")
                                                  else good), 1)
        query = draw(maybe_query)
        if spec.query and draw(st.booleans()):
            query = draw(queries)
        body = draw(bodies_["valid" if mode in ("odd path", "odd values") else "fuzzed"])
        data: Any = None
        if isinstance(body, bytes):
            data = body
        elif body is not None:
            data = encode(body, ascii_only=draw(st.booleans()))
        headers = {}
        content_type = draw(st.sampled_from(CONTENT_TYPES))
        if content_type and data is not None:
            headers["Content-Type"] = content_type
        if data is not None and len(data) < 5000 and draw(st.sampled_from([False] * 9
                                                                          + [True])):
            chunks = [data[i:i + 7] for i in range(0, len(data), 7)]
            data = iter(chunks)  # Transfer-Encoding: chunked
        if anonymous:
            verb, cookie = method, draw(st.sampled_from(world.anonymous))
        else:
            verb, cookie = draw(verbs), world.cookie
        if rule == "/metrics":  # the scraper's token when logged in; none, or a wrong one
            headers["Authorization"] = f"Bearer {world.metrics_token}" if not anonymous \
                else draw(st.sampled_from(["", "Bearer", "Bearer wrong", f"Basic {cookie}",
                                           f"Bearer {world.metrics_token}x"]))
        return Req(verb, f"{path}?{query}" if query else path, data, headers, cookie,
                   anonymous)

    return build()


# -- checking the answers ---------------------------------------------------------------------
_ACTION = [c.name for c in AuditEntry.__table__.columns].index("action")


def _unchanged(before: dict[str, Any], after: dict[str, Any], failed_login: bool) -> str | None:
    """What a refused request changed, if anything it may not: nothing at all, or (a login
    refused with 401) exactly one audit entry ``login_failed``."""
    b, a = dict(before), dict(after)
    b_audit, a_audit = b.pop("audit"), a.pop("audit")
    if a != b:
        return f"tables changed: {diff(b, a)}"
    if a_audit[:len(b_audit)] != b_audit:
        return f"audit entries changed: {diff({'audit': b_audit}, {'audit': a_audit})}"
    added = a_audit[len(b_audit):]
    expected = 1 if failed_login else 0
    if len(added) != expected or any(row[_ACTION] != "login_failed" for row in added):
        return f"audit entries added: {added} (expected {expected} login_failed)"
    return None


def _check(world: World, route: tuple[str, str], spec: Spec, req: Req, seen: Counter) -> None:
    _, rule = route
    if rule in RESTOCKED and not req.anonymous and world.parked() < MIN_PARKED:
        world.park(6)  # act on real letters: replays and discards use them up
        world.last = None
    # nothing but the fuzzed requests writes the monitor's tables: the state after one
    # request is the state before the next
    before = world.last if world.last is not None else world.state()
    world.last = None
    headers = dict(req.headers)
    if req.cookie is not None:
        headers["Cookie"] = f"{COOKIE}={req.cookie}"
    with requests.Session() as http:
        r = http.request(req.method, f"{world.base}{req.url}", data=req.data, headers=headers,
                         timeout=30, allow_redirects=False)
    seen[r.status_code] += 1
    shown = repr(req)
    assert r.status_code < 500, (shown, r.status_code, r.text[:1000])
    assert "Traceback" not in r.text, (shown, r.text[:1000])
    if r.headers.get("Content-Type", "").startswith("application/json") and r.content:
        try:
            payload = r.json()  # well-formed JSON, whatever the input
        except ValueError as exc:
            raise AssertionError((shown, r.status_code, "not JSON", r.text[:500])) from exc
        if r.status_code >= 400:
            assert isinstance(payload.get("errors"), dict), (shown, payload)
    if req.anonymous and not spec.public:
        assert r.status_code == 401, (shown, r.status_code, r.text[:500])
        assert "log in" in r.json()["errors"]["_auth"][0], (shown, r.text[:500])
    if req.anonymous and rule == "/metrics":
        assert r.status_code == 401, (shown, r.status_code, r.text[:500])
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), (shown, r.headers)
    if rule == "/static/<name>" and r.status_code == 200 and req.method == "GET":
        # only the page's own files, never anything outside services/monitor/web
        assert r.content in WEB_FILES.values(), (shown, r.content[:200])
    if r.status_code >= 400:
        after = world.state()
        failed_login = (r.status_code == 401 and req.method == "POST"
                        and req.url.split("?")[0] == "/api/login")
        problem = _unchanged(before, after, failed_login)
        assert problem is None, (shown, r.status_code, r.text[:500], problem)
        world.last = after


# GRIDFLOW_FUZZ_KEEP_GOING=1: collect every failure of a run (unshrunk) instead of stopping
# at the first; GRIDFLOW_FUZZ_STATS=1 (with -s): print what answers each route gave
KEEP_GOING = bool(os.environ.get("GRIDFLOW_FUZZ_KEEP_GOING"))
STATS = bool(os.environ.get("GRIDFLOW_FUZZ_STATS"))
failures: list[str] = []


def _fuzz(world: World, route: tuple[str, str], spec: Spec, *, anonymous: bool) -> Counter:
    seen: Counter = Counter()
    method, rule = route

    @fuzz_settings(spec.anonymous if anonymous else spec.examples)
    @given(requests_for(method, rule, spec, world, anonymous))
    def run(req: Req) -> None:
        if KEEP_GOING:
            try:
                _check(world, route, spec, req, seen)
            except AssertionError as exc:
                failures.append(f"{method} {rule}: {str(exc)[:1500]}")
            return
        _check(world, route, spec, req, seen)

    run()
    return seen


def test_every_monitor_endpoint_survives_fuzzing(world: World) -> None:
    assert world.routes == set(ENDPOINTS), (
        "fuzz these monitor routes too (or drop the gone ones from ENDPOINTS): "
        f"{sorted(world.routes ^ set(ENDPOINTS))}")
    failures.clear()
    statuses: dict[str, Counter] = {}
    took: dict[str, float] = {}
    for route, spec in ENDPOINTS.items():
        for anonymous in (False, True) if spec.anonymous else (False,):
            name = " ".join(route) + (" (logged out)" if anonymous else "")
            started = time.monotonic()
            statuses[name] = _fuzz(world, route, spec, anonymous=anonymous)
            took[name] = time.monotonic() - started
    if STATS:
        for name, seen in statuses.items():
            print(f"{name}: {dict(sorted(seen.items()))} in {took[name]:.1f} s")
    assert not failures, "\n\n".join(failures)
    # every route let some requests through: the fuzzing reached the handlers' rules
    quiet = [name for name, seen in statuses.items()
             if "logged out" not in name and not any(200 <= s < 300 for s in seen)]
    assert not quiet, (quiet, statuses)
    # and the monitor still works: a letter is parked, listed and replayed
    world.park(1)
    with requests.Session() as http:
        http.cookies.set(COOKIE, world.cookie)
        letters = http.get(f"{world.base}/api/dead-letters", timeout=10).json()["items"]
        r = http.post(f"{world.base}/api/dead-letters/replay",
                      json={"ids": [letters[0]["id"]]}, timeout=10)
    assert r.status_code == 200 and r.json()["replayed"] == [letters[0]["id"]], r.text


# -- what the fuzzing found, pinned (each failed before its fix) --------------------------------
@pytest.fixture
def monitor_alone(run_services: Any, service_config: dict[str, Any],
                  rabbit_config: dict[str, Any]) -> Any:
    """The monitor alone, logged in, with one parked dead letter."""
    monitor = run_services(MonitorService, config={**service_config, **MONITOR_CONFIG})["monitor"]
    with kombu.Connection(rabbit_config["AMQP_URI"]) as conn:
        _publish_dead(conn.Producer(), 1)
    state = DbState(monitor, ignore=("instances",))
    wait_for(lambda: state()["dead_letters"], what="the dead letter collected")
    base = f"http://{monitor.config['WEB_SERVER_ADDRESS']}"
    r = requests.post(f"{base}/api/login", json=LOGIN, timeout=10)
    assert r.status_code == 200, r.text
    return base, r.cookies[COOKIE], state


# (why, path, body, status, the errors' key)
REFUSED_IDS: list[tuple[str, str, Any, int, str]] = [
    # SQLite cannot bind an integer beyond 64 bits (OverflowError): a 500 there (PostgreSQL
    # compared it as a numeric, naming nothing); refused alike on both now
    ("replay, id 10**30", "/api/dead-letters/replay",
     {"ids": [10**30], "queue": "gridflow.routing"}, 422, "ids"),
    ("replay, id 2**63", "/api/dead-letters/replay", {"ids": [1, 2**63]}, 422, "ids"),
    ("discard, id 2**64", "/api/dead-letters/discard", {"ids": [2**64, 7], "reason": "dup"},
     422, "ids"),
]


def test_what_the_monitor_fuzzing_found_is_refused_and_keeps_nothing(monitor_alone: Any) -> None:
    base, cookie, state = monitor_alone
    cookies = {COOKIE: cookie}
    for why, path, body, status, key in REFUSED_IDS:
        before = state()
        r = requests.post(f"{base}{path}", json=body, cookies=cookies, timeout=10)
        assert r.status_code == status and key in r.json()["errors"], (why, r.text)
        assert state() == before, why
    # the largest id a database keeps is an id like any other: it names no letter
    r = requests.post(f"{base}/api/dead-letters/replay", json={"ids": [2**63 - 1]},
                      cookies=cookies, timeout=10)
    assert r.json() == {"replayed": [], "failed": {}, "not_parked": [2**63 - 1]}, r.text

    # an operator's name that JSON must escape: the answer to the login was not JSON
    r = requests.post(f"{base}/api/login", json={"name": ODD_OPERATOR,
                                                 "password": ODD_PASSWORD}, timeout=10)
    assert r.status_code == 200 and r.json()["operator"] == ODD_OPERATOR, r.text
    me = requests.get(f"{base}/api/me", cookies={COOKIE: r.cookies[COOKIE]}, timeout=10)
    assert me.json()["operator"] == ODD_OPERATOR, me.text


def _raw_get(base: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written: no client normalising dots or escapes."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


STATIC_OUTSIDE = [
    "/static/..%2F..%2Fservice.py", "/static/..%2Fservice.py", "/static/%2E%2E%2Fservice.py",
    "/static/../service.py", "/static/..", "/static/%2E%2E", "/static/.hidden",
    "/static/service.py", "/static/..%5Cservice.py", "/static/%2Fetc%2Fpasswd",
    "/static/a%00b", "/static/index.html%00", "/static/index.html%00.png",
    # longer than the file system's names: os.stat raised ENAMETOOLONG, a 500
    "/static/" + "x" * 300, "/static/" + "%E4%B8%AD" * 100, "/static/" + "%20" * 1000,
]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_static_route_serves_the_web_folder_only(run_services: Any,
                                                     service_config: dict[str, Any]) -> None:
    monitor = run_services(MonitorService, config={**service_config, **MONITOR_CONFIG})["monitor"]
    base = f"http://{monitor.config['WEB_SERVER_ADDRESS']}"
    for path in STATIC_OUTSIDE:
        status, body = _raw_get(base, path)
        assert status == 404, (path, status, body[:200])
    for name, content in WEB_FILES.items():
        assert _raw_get(base, f"/static/{name}") == (200, content), name


def test_a_dead_letter_holding_text_no_database_keeps_is_collected(
    run_services: Any, service_config: dict[str, Any], rabbit_config: dict[str, Any]
) -> None:
    """A NUL in the body or a header, or an unpaired surrogate in a header (py-amqp decodes
    one): on PostgreSQL the collection's commit failed, the batch was never acked, and the
    whole ``.dlq`` stopped being collected (SQLite kept them as they were). Both now keep
    U+FFFD in their place, as for bytes that are not UTF-8. Found parking the fuzzing's
    letters."""
    monitor = run_services(MonitorService, config={**service_config, **MONITOR_CONFIG})["monitor"]
    state = DbState(monitor, ignore=("instances",))
    with kombu.Connection(rabbit_config["AMQP_URI"]) as conn:
        producer = conn.Producer()
        _publish_dead(producer, 1, b"\xff\xfe not JSON \x00")
        _publish_dead(producer, 2, '{"type": "x"}', **{"x-odd": "a\x00b", "x-\x00": 1})
        _publish_dead(producer, 3, '{"type": "x"}', **{"x-odd": ["\ud800", {"k": "\udfff"}]})
        _publish_dead(producer, 4)  # behind them in the same queue
    wait_for(lambda: len(state()["dead_letters"]) == 4, what="all four letters collected")
    base = f"http://{monitor.config['WEB_SERVER_ADDRESS']}"
    cookies = {COOKIE: requests.post(f"{base}/api/login", json=LOGIN,
                                     timeout=10).cookies[COOKIE]}
    items = requests.get(f"{base}/api/dead-letters", cookies=cookies, timeout=10).json()["items"]
    ids = {d["message_id"]: d["id"] for d in items}
    letters = {m: requests.get(f"{base}/api/dead-letters/{i}", cookies=cookies,
                               timeout=10).json() for m, i in ids.items()}
    assert letters["mf-1"]["payload"] == "\ufffd\ufffd not JSON \ufffd"  # as stored, shown
    assert letters["mf-2"]["headers"]["x-odd"] == "a\ufffdb"
    assert "x-\ufffd" in letters["mf-2"]["headers"]
    assert letters["mf-3"]["headers"]["x-odd"] == ["\ufffd", {"k": "\ufffd"}]
    r = requests.post(f"{base}/api/dead-letters/replay", json={"all": True}, cookies=cookies,
                      timeout=10)
    assert sorted(r.json()["replayed"]) == sorted(ids.values()), r.text
