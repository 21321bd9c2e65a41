"""monitor: the operators' page — queues, dead letters, service instances, the case funnel,
the supervision ledger and the district's measures.

A thin shell. Queue figures and collection go through ``broker``; dead letters, heartbeats
and the audit log are the monitor's own tables (``records``); cases, measures and the ledger
belong to intake and escalation and are asked for over RPC.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import eventlet
from nameko.dependency_providers import Config
from nameko.exceptions import RemoteError
from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy
from nameko.web.handlers import http
from werkzeug.wrappers import Request, Response

from shared import access, metrics
from shared.amqp import topology
from shared.amqp.publisher import OutgoingMessage
from shared.clock import utcnow
from shared.config import Settings, setting
from shared.events import InvalidEvent, decode_heartbeat
from shared.extensions.broker import BROKER_ERRORS
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.http import (
    ApiError,
    NotFound,
    Unavailable,
    json_http,
    json_response,
    read_json,
)
from shared.extensions.observability import Observed
from shared.extensions.store import Store
from shared.extensions.ticker import ticker
from shared.private_files import read_or_create

from . import auth, bodies, records
from . import deadletters as dl
from . import instances as inst
from .broker import Broker, BrokerAdmin
from .queues import BacklogTracker, QueueStatus, assess
from .store import Base, Inbox, Outbox

log = logging.getLogger(__name__)

WEB = Path(__file__).parent / "web"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                ".svg": "image/svg+xml", ".png": "image/png"}
COOKIE = "gridflow_operator"
RPC_TIMEOUT_S = 10.0
COLLECT_BATCH = 200
REPLAY_BATCH = 200
EXPECTED_SERVICES = ["escalation", "intake", "monitor", "notify", "routing"]


class Console(DependencyProvider):
    """What the monitor keeps in memory: the queue depth history, the latest queue figures,
    the session secret and the configured operators."""

    def setup(self) -> None:
        config = self.container.config
        settings = Settings.from_config(config)
        self.tracker = BacklogTracker()
        self.queues: list[QueueStatus] = []
        self.source = "not sampled yet"
        self.sampled_at: str | None = None
        self.secret = self._secret(setting(config, "GRIDFLOW_MONITOR_SECRET", None),
                                   settings.var_dir)
        users = auth.parse_users(str(setting(config, "GRIDFLOW_MONITOR_USERS", "")))
        self.users = users or {
            "operator": str(setting(config, "GRIDFLOW_MONITOR_PASSWORD", "gridflow"))}
        self.seeded = False
        self.secure_cookie = str(setting(config, "GRIDFLOW_MONITOR_SECURE_COOKIE", "")) in (
            "1", "true", "yes")
        # a key session asks intake whether its key still stands at most this often
        self.key_check_s = float(setting(config, "GRIDFLOW_MONITOR_KEY_CHECK_S", 30.0))
        self.key_checks: dict[str, tuple[float, bool]] = {}

    @staticmethod
    def _secret(configured: str | None, var_dir: Path) -> bytes:
        """The key that signs sessions: configured, or one kept in var/ across restarts."""
        if configured:
            return str(configured).encode()
        return read_or_create(var_dir / "monitor.secret", lambda: secrets.token_hex(32)).encode()

    def get_dependency(self, worker_ctx: Any) -> Console:
        return self


class MonitorService(Observed):
    name = "monitor"

    db = Store(Base.metadata, Outbox, Inbox)
    ref = Reference()
    clock = ClockProvider()
    broker: BrokerAdmin = Broker()
    console: Console = Console()
    config = Config()
    intake = RpcProxy("intake")
    escalation = RpcProxy("escalation")

    # -- collecting: dead letters and heartbeats -------------------------------------------
    def _queue_names(self) -> list[str]:
        return [q.name for q in topology.queues(sorted(self.ref.catalogue.departments))]

    @ticker("GRIDFLOW_MONITOR_COLLECT_S", default=1.0)
    def collect(self) -> dict[str, int]:
        """Move dead letters from every ``.dlq`` into the monitor's table, and record the
        heartbeats. Each message is acked only after its row committed."""
        done = {"dead_letters": 0, "heartbeats": 0}
        try:
            done["heartbeats"] = self._collect_beats()
        except Exception as exc:  # the next round tries again; the letters go on
            log.warning("cannot collect heartbeats", extra={"error": repr(exc)})
        for name in self._queue_names():
            if not name.endswith(".dlq"):
                continue
            try:
                done["dead_letters"] += self._collect_letters(name)
            except BROKER_ERRORS as exc:
                log.warning("cannot collect from the broker", extra={"error": repr(exc)})
                break
            except Exception as exc:  # one queue's trouble does not stop the others
                log.error("cannot collect dead letters", extra={"queue": name,
                                                               "error": repr(exc)})
        return done

    def _collect_letters(self, dlq: str) -> int:
        taken = self.broker.take(dlq, COLLECT_BATCH)
        if not taken.messages:
            return 0
        try:
            letters = [dl.read(dlq, m.properties or {}, m.headers, m.body)
                       for m in taken.messages]
            with self.db.transaction() as tx:
                stored = records.collect(tx.session, letters, utcnow())
        except BaseException:
            taken.give_back()
            raise
        taken.ack()
        if stored:
            log.info("dead letters collected", extra={"queue": dlq, "count": stored})
        return stored

    def _collect_beats(self) -> int:
        taken = self.broker.take(topology.HEARTBEATS_QUEUE, 1000)
        beats = []
        for m in taken.messages:
            try:
                beats.append(decode_heartbeat(m.body))
            except InvalidEvent as exc:
                log.warning("bad heartbeat dropped", extra={"error": str(exc)})
        try:
            if beats:
                with self.db.transaction() as tx:
                    records.record_beats(tx.session, beats)
        finally:
            taken.ack()  # a beat not recorded is replaced by the next one in seconds
        return len(beats)

    @ticker("GRIDFLOW_MONITOR_SAMPLE_S", default=3.0)
    def sample(self) -> int:
        """Take the queue figures; their history says which backlogs grow."""
        try:
            statuses, source = self.broker.queue_statuses(self._queue_names())
        except BROKER_ERRORS as exc:
            log.warning("cannot read queue figures", extra={"error": repr(exc)})
            return 0
        self.console.tracker.observe(statuses)
        self.console.queues = assess(statuses, self.console.tracker)
        self.console.source, self.console.sampled_at = source, utcnow().isoformat()
        return len(statuses)

    def refresh_metrics(self) -> None:
        super().refresh_metrics()
        with self.db.read() as s:
            metrics.DEAD_LETTERS_PARKED.labels(self.name).set(records.parked_count(s))

    # -- operators ---------------------------------------------------------------------------
    def _operator(self, request: Request) -> auth.Session:
        who = auth.session_of(self.console.secret, request.cookies.get(COOKIE))
        if who is None:
            raise ApiError({"_auth": ["log in first (POST /api/login)"]}, status=401)
        if who.key_id is not None and not self._key_stands(who.key_id):
            raise ApiError({"_auth": [f"API key {who.key_id} was revoked; log in again"]},
                           status=401)
        return who

    def _key_stands(self, key_id: str) -> bool:
        """Whether intake still knows the key unrevoked (asked at most every
        GRIDFLOW_MONITOR_KEY_CHECK_S; while intake does not answer, the last answer)."""
        checks = self.console.key_checks
        at, ok = checks.get(key_id, (0.0, True))
        if time.monotonic() - at >= self.console.key_check_s:
            try:
                with eventlet.Timeout(RPC_TIMEOUT_S):
                    ok = bool(self.intake.key_active(key_id))
            except (eventlet.Timeout, *BROKER_ERRORS) as exc:
                log.warning("cannot check an operator's key", extra={"error": repr(exc)})
            checks[key_id] = (time.monotonic(), ok)
        return ok

    @json_http("POST", "/api/login")
    def login(self, request: Request) -> Response:
        """A name and password (GRIDFLOW_MONITOR_USERS), or an operator's or admin's key."""
        body = bodies.LoginBody().load(read_json(request))
        remote = request.remote_addr or ""
        who = (self._by_key(body["key"], remote) if "key" in body
               else self._by_password(body, remote))
        response = json_response(who.as_dict())  # a name JSON must escape too
        response.set_cookie(COOKIE, auth.issue_token(self.console.secret, who.encode()),
                            max_age=auth.SESSION_HOURS * 3600, httponly=True, samesite="Strict",
                            secure=self.console.secure_cookie)
        return response

    def _by_password(self, body: dict[str, Any], remote: str) -> auth.Session:
        now = self.clock.now()
        with self.db.transaction() as tx:
            if not self.console.seeded:
                records.seed_operators(tx.session, self.console.users, now, auth.hash_password)
                self.console.seeded = True
            stored = records.password_hash(tx.session, body["name"])
            ok = stored is not None and auth.check_password(body["password"], stored)
            self._audit_login(tx, body["name"], ok, {}, remote)
        if not ok:
            raise ApiError({"_auth": ["unknown operator or wrong password"]}, status=401)
        return auth.Session(body["name"])

    def _by_key(self, token: str, remote: str) -> auth.Session:
        try:
            found = self._ask("intake", "authenticate", token=token)
        except RemoteError as exc:
            if exc.exc_type != "KeyRefused":
                raise
            with self.db.transaction() as tx:
                self._audit_login(tx, "(a key)", False, {"reason": str(exc.value)}, remote)
            raise ApiError({"_auth": [str(exc.value)]}, status=401) from exc
        who = auth.Session(found["client"], found["role"], found["key_id"], found["grid"])
        allowed = found["role"] in (access.OPERATOR, access.ADMIN)
        with self.db.transaction() as tx:
            self._audit_login(tx, found["client"], allowed,
                              {"key_id": found["key_id"], "role": found["role"]}, remote)
        if not allowed:
            raise ApiError({"_auth": [f"the monitor is for operators and admins, not a "
                                      f"{found['role']} key"]}, status=403)
        self.console.key_checks[who.key_id or ""] = (time.monotonic(), True)
        return who

    @staticmethod
    def _audit_login(tx: Any, name: str, ok: bool, detail: dict[str, Any], remote: str) -> None:
        records.audit(tx.session, at=utcnow(), operator=name,
                      action="login" if ok else "login_failed", target="monitor",
                      detail=detail, remote_addr=remote)

    # -- what a scoped operator may see and do (shared.access) ----------------------------
    def _grid_filter(self, who: auth.Session, q: dict[str, Any]) -> dict[str, Any]:
        """Its own subtree when it asked for none; 403 outside it."""
        return access.narrowed(who.principal, q, self.ref.grid.path_codes)

    def _letter_queues(self, who: auth.Session) -> list[str] | None:
        """The dead-letter queues an operator's tiers cover (None: all): a scoped operator
        replays and discards only what its own tier queues and those below it lost."""
        if who.grid is None:
            return None
        node = self.ref.grid.get(who.grid)
        levels = self.ref.grid.levels
        own = levels.depth(node.level) if node is not None else len(levels.names)
        return [topology.tier_queue(t) for t in levels.tiers() if levels.depth(t) >= own]

    def _may_decide(self, who: auth.Session, session: Any, body: dict[str, Any]) -> \
            list[str] | None:
        within = self._letter_queues(who)
        if within is None:
            return None
        if body.get("queue") and body["queue"] not in within:
            raise access.forbidden(f"queue {body['queue']} is not one of this key's tiers "
                                   f"({', '.join(within)})")
        if body.get("ids"):
            outside = sorted(i for i, q in records.queues_of(session, body["ids"]).items()
                             if q not in within)
            if outside:
                raise access.forbidden(f"dead letters {outside} are not from this key's tiers "
                                       f"({', '.join(within)})")
        return within

    @json_http("POST", "/api/logout")
    def logout(self, request: Request) -> Response:
        response = Response('{"operator": null}', mimetype="application/json")
        response.delete_cookie(COOKIE)
        return response

    @json_http("GET", "/api/me")
    def me(self, request: Request) -> dict[str, Any]:
        return self._operator(request).as_dict()

    # -- queues and services -----------------------------------------------------------------
    @json_http("GET", "/api/queues")
    def queues(self, request: Request) -> dict[str, Any]:
        self._operator(request)
        if not self.console.sampled_at:
            self.sample()
        return {"source": self.console.source, "sampled_at": self.console.sampled_at,
                "queues": [q.as_dict() for q in self.console.queues]}

    @json_http("GET", "/api/services")
    def services(self, request: Request) -> dict[str, Any]:
        self._operator(request)
        with self.db.read() as s:
            found = records.instances(s)
        return inst.summary(found, utcnow(), EXPECTED_SERVICES)

    # -- dead letters ------------------------------------------------------------------------
    @json_http("GET", "/api/dead-letters")
    def dead_letters(self, request: Request) -> dict[str, Any]:
        self._operator(request)
        q = bodies.LettersQuery().load(request.args.to_dict())
        state = None if q["state"] == "all" else q["state"]
        with self.db.read() as s:
            return records.letters(s, state=state, queue=q.get("queue"), limit=q["limit"],
                                   offset=q["offset"])

    @json_http("GET", "/api/dead-letters/<int:letter_id>")
    def dead_letter(self, request: Request, letter_id: int) -> dict[str, Any]:
        self._operator(request)
        with self.db.read() as s:
            row = records.letter(s, letter_id)
            if row is None:
                raise NotFound({"letter_id": [f"no dead letter {letter_id}"]})
            return records.letter_view(row, full=True)

    @json_http("POST", "/api/dead-letters/replay")
    def replay(self, request: Request) -> dict[str, Any]:
        """Publish the chosen parked letters back into the queues they died in, a batch at a
        time with pipelined confirms, then mark the confirmed ones replayed (one audit entry
        each); the refused ones stay parked and are named with the broker's reason."""
        session = self._operator(request)
        who = session.label
        body = bodies.ReplayBody().load(read_json(request))
        with self.db.read() as s:
            within = self._may_decide(session, s, body)
        ids, addr = body.get("ids"), request.remote_addr or ""
        replayed: list[int] = []
        failed: dict[int, str] = {}
        while True:
            with self.db.transaction() as tx:
                rows = records.parked(tx.session, ids, body.get("queue"), REPLAY_BATCH,
                                      skip=failed, within=within)
                if not rows:
                    break
                now = utcnow()
                plans = [dl.replay_of(r.queue, r.headers, by=who, at=now) for r in rows]
                refused = self.broker.publish([
                    OutgoingMessage(exchange=p.exchange, routing_key=p.routing_key,
                                    body=r.body.encode(), type=r.type, headers=p.headers,
                                    message_id=r.message_id or str(uuid.uuid4()),
                                    content_type=r.content_type)
                    for r, p in zip(rows, plans, strict=True)])
                for i, row in enumerate(rows):
                    if i in refused:
                        failed[row.id] = refused[i]
                        continue
                    records.decide(tx.session, row, dl.REPLAYED, by=who, at=now, note="",
                                   remote_addr=addr)
                    replayed.append(row.id)
        missing = sorted(set(ids) - set(replayed) - set(failed)) if ids else []
        return {"replayed": replayed, "failed": failed, "not_parked": missing}

    @json_http("POST", "/api/dead-letters/discard")
    def discard(self, request: Request) -> dict[str, Any]:
        session = self._operator(request)
        who = session.label
        body = bodies.DiscardBody().load(read_json(request))
        with self.db.transaction() as tx:
            within = self._may_decide(session, tx.session, body)
            rows = records.parked(tx.session, body.get("ids"), body.get("queue"), 100_000,
                                  within=within)
            now = utcnow()
            for row in rows:
                records.decide(tx.session, row, dl.DISCARDED, by=who, at=now,
                               note=body["reason"], remote_addr=request.remote_addr or "")
            done = [r.id for r in rows]
        missing = sorted(set(body.get("ids") or []) - set(done))
        return {"discarded": done, "not_parked": missing}

    @json_http("GET", "/api/audit")
    def audit(self, request: Request) -> dict[str, Any]:
        self._operator(request)
        q = bodies.Page().load(request.args.to_dict())
        with self.db.read() as s:
            return records.audit_log(s, q["limit"], q["offset"])

    # -- cases, the ledger and the measures (intake's and escalation's, over RPC) ----------
    def _ask(self, service: str, method: str, **kwargs: Any) -> Any:
        proxy = getattr(self, service)
        try:
            with eventlet.Timeout(RPC_TIMEOUT_S):
                return getattr(proxy, method)(**kwargs)
        except eventlet.Timeout as exc:
            raise Unavailable(f"{service} did not answer within {RPC_TIMEOUT_S:.0f} s") from exc
        except RemoteError as exc:
            if exc.exc_type == "InvalidFilters":  # a grid or department it does not know
                raise ApiError(json.loads(exc.value), status=422) from exc
            raise

    @json_http("GET", "/api/funnel")
    def funnel(self, request: Request) -> Any:
        who = self._operator(request)
        q = self._grid_filter(who, bodies.StatsQuery().load(request.args.to_dict()))
        return self._ask("intake", "funnel", **bodies.rpc_filters(q))

    @json_http("GET", "/api/measures")
    def measures(self, request: Request) -> Any:
        who = self._operator(request)
        q = self._grid_filter(who, bodies.MeasuresQuery().load(request.args.to_dict()))
        return self._ask("intake", "measures", **bodies.rpc_filters(q))

    @json_http("GET", "/api/cases")
    def cases(self, request: Request) -> Any:
        who = self._operator(request)
        q = self._grid_filter(who, bodies.CasesQuery().load(request.args.to_dict()))
        return self._ask("intake", "cases", **bodies.rpc_filters(q))

    @json_http("GET", "/api/cases/<case_id>")
    def case(self, request: Request, case_id: str) -> Any:
        who = self._operator(request)
        found = self._ask("intake", "case", case_id=case_id)
        if found is None:
            raise NotFound({"case_id": [f"no case {case_id}"]})
        access.in_grid(who.principal, self.ref.grid.path_codes(found["grid_code"]),
                       f"case {case_id}")
        ledger = self._ask("escalation", "ledger", case_id=case_id, per_page=200)
        return {**found, "supervision": ledger["items"]}

    @json_http("GET", "/api/ledger")
    def ledger(self, request: Request) -> Any:
        who = self._operator(request)
        q = self._grid_filter(who, bodies.LedgerQuery().load(request.args.to_dict()))
        return self._ask("escalation", "ledger", **q)

    @json_http("GET", "/api/reference")
    def reference(self, request: Request) -> dict[str, Any]:
        """Names for the page: departments, categories and the grid's upper tiers."""
        self._operator(request)
        ref = self.ref
        return {
            "departments": {c: d.name for c, d in sorted(ref.catalogue.departments.items())},
            "district": ref.grid.root.code,
        }

    # -- the page ----------------------------------------------------------------------------
    @http("GET", "/")
    def page(self, request: Request) -> Response:
        return self._static("index.html")

    @http("GET", "/static/<name>")
    def static(self, request: Request, name: str) -> Response:
        return self._static(name)

    def _static(self, name: str) -> Response:
        path = WEB / name
        try:
            found = "/" not in name and not name.startswith(".") and path.is_file()
        except OSError:  # a name the file system refuses (too long): no such file either
            found = False
        if not found:
            return Response("not found", status=404)
        kind = STATIC_TYPES.get(path.suffix, "application/octet-stream")
        return Response(path.read_bytes(), mimetype=kind,
                        headers={"Cache-Control": "no-cache"})

    @json_http("GET", "/health", public=True)
    def health(self, request: Request) -> dict[str, Any]:
        return {"service": self.name, "status": "ok", "queues_from": self.console.source}
