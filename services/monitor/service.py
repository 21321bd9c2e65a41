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

from shared import metrics
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

    @staticmethod
    def _secret(configured: str | None, var_dir: Path) -> bytes:
        """The key that signs sessions: configured, or one kept in var/ across restarts."""
        if configured:
            return str(configured).encode()
        path = var_dir / "monitor.secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()

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
    def _operator(self, request: Request) -> str:
        who = auth.operator_of(self.console.secret, request.cookies.get(COOKIE))
        if who is None:
            raise ApiError({"_auth": ["log in first (POST /api/login)"]}, status=401)
        return who

    @json_http("POST", "/api/login")
    def login(self, request: Request) -> Response:
        body = bodies.LoginBody().load(read_json(request))
        now = self.clock.now()
        with self.db.transaction() as tx:
            if not self.console.seeded:
                records.seed_operators(tx.session, self.console.users, now, auth.hash_password)
                self.console.seeded = True
            stored = records.password_hash(tx.session, body["name"])
            ok = stored is not None and auth.check_password(body["password"], stored)
            records.audit(tx.session, at=utcnow(), operator=body["name"],
                          action="login" if ok else "login_failed", target="monitor",
                          detail={}, remote_addr=request.remote_addr or "")
        if not ok:
            raise ApiError({"_auth": ["unknown operator or wrong password"]}, status=401)
        response = json_response({"operator": body["name"]})  # a name JSON must escape too
        response.set_cookie(COOKIE, auth.issue_token(self.console.secret, body["name"]),
                            max_age=auth.SESSION_HOURS * 3600, httponly=True, samesite="Strict",
                            secure=self.console.secure_cookie)
        return response

    @json_http("POST", "/api/logout")
    def logout(self, request: Request) -> Response:
        response = Response('{"operator": null}', mimetype="application/json")
        response.delete_cookie(COOKIE)
        return response

    @json_http("GET", "/api/me")
    def me(self, request: Request) -> dict[str, Any]:
        return {"operator": self._operator(request)}

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
        who = self._operator(request)
        body = bodies.ReplayBody().load(read_json(request))
        ids, addr = body.get("ids"), request.remote_addr or ""
        replayed: list[int] = []
        failed: dict[int, str] = {}
        while True:
            with self.db.transaction() as tx:
                rows = records.parked(tx.session, ids, body.get("queue"), REPLAY_BATCH,
                                      skip=failed)
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
        who = self._operator(request)
        body = bodies.DiscardBody().load(read_json(request))
        with self.db.transaction() as tx:
            rows = records.parked(tx.session, body.get("ids"), body.get("queue"), 100_000)
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
        self._operator(request)
        q = bodies.StatsQuery().load(request.args.to_dict())
        return self._ask("intake", "funnel", **bodies.rpc_filters(q))

    @json_http("GET", "/api/measures")
    def measures(self, request: Request) -> Any:
        self._operator(request)
        q = bodies.MeasuresQuery().load(request.args.to_dict())
        return self._ask("intake", "measures", **bodies.rpc_filters(q))

    @json_http("GET", "/api/cases")
    def cases(self, request: Request) -> Any:
        self._operator(request)
        q = bodies.CasesQuery().load(request.args.to_dict())
        return self._ask("intake", "cases", **bodies.rpc_filters(q))

    @json_http("GET", "/api/cases/<case_id>")
    def case(self, request: Request, case_id: str) -> Any:
        self._operator(request)
        found = self._ask("intake", "case", case_id=case_id)
        if found is None:
            raise NotFound({"case_id": [f"no case {case_id}"]})
        ledger = self._ask("escalation", "ledger", case_id=case_id, per_page=200)
        return {**found, "supervision": ledger["items"]}

    @json_http("GET", "/api/ledger")
    def ledger(self, request: Request) -> Any:
        self._operator(request)
        q = bodies.LedgerQuery().load(request.args.to_dict())
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
