"""The simulator's I/O: intake's HTTP API, the department and tier queues (pika), and
departments' answers on ``gridflow.responses``. No decisions here: ``plan`` makes them."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from .plan import Action, Outcome

log = logging.getLogger("gridflow.simulator")

RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # then the action is given up and counted
RETRIED_STATUSES = (408, 429)
RESPONSES_EXCHANGE = "gridflow.responses"
CONSUMER_PRIORITY = -1  # below a person's own `gridflow subscribe` (0)


def pika_uri(uri: str) -> str:
    """kombu's ``pyamqp://`` as pika's ``amqp://``."""
    return "amqp://" + uri.split("://", 1)[1] if uri.startswith("pyamqp://") else uri


# What each of the simulator's actions is, in the roles of intake's API keys
# (shared.access): the people who report, verify and rate carry a patrol app; departments
# answer with their own department's key; a tier's staff whistle and dispatch by hand.
PATROL_APP, DEPARTMENT, OPERATOR = "patrol_app", "department", "operator"
ROLE_OF_KIND = {
    "report": PATROL_APP, "verify": PATROL_APP, "rate": PATROL_APP, "follow_up": PATROL_APP,
    "ack": DEPARTMENT, "progress": DEPARTMENT, "resolve": DEPARTMENT, "return": DEPARTMENT,
    "whistle": OPERATOR, "dispatch": OPERATOR,
}
REFUSED_STATUSES = (401, 403)  # a key intake does not know, or one not allowed this: stop
KEY_HINT = (
    "the simulator plays patrol apps, departments and operators alike: give it an admin "
    "API key (--api-key or GRIDFLOW_API_KEY; e.g. `gridflow keys issue --role admin "
    "--client simulator --rate 0`), or one key per role (--patrol-key, --operator-key, "
    "--department-key DEPT=KEY for each department answering over HTTP)"
)


@dataclass(frozen=True)
class Keys:
    """The API keys the simulator holds: ``admin`` for whatever has no key of its own, or a
    key per role it plays (patrol apps, operators, each department)."""

    admin: str | None = None
    patrol: str | None = None
    operator: str | None = None
    departments: Mapping[str, str] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return bool(self.admin or self.patrol or self.operator or self.departments)

    def for_action(self, action: Action) -> tuple[str, str | None]:
        """(which key, for messages; the token) for an action over HTTP."""
        role = ROLE_OF_KIND.get(action.kind)
        if role == DEPARTMENT and action.department in self.departments:
            return f"--department-key {action.department}", self.departments[action.department]
        own = {PATROL_APP: self.patrol, OPERATOR: self.operator}.get(role or "")
        if own:
            return f"--{'patrol' if role == PATROL_APP else 'operator'}-key", own
        return "the admin key (--api-key)", self.admin

    def for_reads(self) -> tuple[str, str | None]:
        """A key for the categories and the grid (every role may read them)."""
        if self.admin:
            return "the admin key (--api-key)", self.admin
        for label, token in (("--patrol-key", self.patrol), ("--operator-key", self.operator),
                             *((f"--department-key {d}", t)
                               for d, t in sorted(self.departments.items()))):
            if token:
                return label, token
        return "no key", None

    def missing(self, http_departments: Sequence[str]) -> list[str]:
        """What the simulator would do over HTTP with no key: empty with an admin key."""
        if self.admin:
            return []
        out = [f"{what} (--{flag}-key)" for what, flag, token in (
            ("reports, verifications and ratings", "patrol", self.patrol),
            ("whistles and dispatches by hand", "operator", self.operator)) if not token]
        lacking = sorted(d for d in http_departments if d not in self.departments)
        if lacking:
            out.append(f"the answers of department(s) {', '.join(lacking)} "
                       "(--department-key DEPT=KEY)")
        return out


@dataclass(frozen=True)
class Refusal:
    """intake refused a key (401: unknown, wrong or revoked) or what it was used for (403)."""

    status: int
    reason: str
    request: str  # e.g. "POST /api/v1/reports"
    key: str  # which of the simulator's keys

    def message(self) -> str:
        what = "does not accept" if self.status == 401 else "does not allow"
        return (f"intake {what} {self.key}: {self.status} {self.reason} ({self.request}); "
                f"{KEY_HINT}")


class AccessRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message())
        self.refusal = refusal


class Http:
    """JSON over HTTP to intake, with an API key (``Authorization: Bearer``). A refused
    connection, a timeout, a 5xx, 408 or 429 is tried again with the same body (a report
    keeps its report_id, so a retry is never a second report) until ``RETRY_DELAYS_S`` are
    used up or ``stop`` is set. A 401 or 403 is never tried again: the first one is kept in
    ``refused`` and sets ``stop`` (the run cannot go on with keys intake refuses)."""

    def __init__(self, base_url: str, stop: threading.Event, keys: Keys | None = None,
                 timeout: float = 8.0, delays: Sequence[float] = RETRY_DELAYS_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.stop = stop
        self.keys = keys or Keys()
        self.timeout = timeout
        self.delays = tuple(delays)
        self.refused: Refusal | None = None
        self._lock = threading.Lock()

    def once(self, method: str, path: str, body: Any = None,
             token: str | None = None) -> Outcome:
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return Outcome(resp.status, _json(resp.read()))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return Outcome(exc.code, _json(raw), raw[:300].decode(errors="replace"))
        except (OSError, ValueError) as exc:  # refused, reset, timed out
            return Outcome(0, None, f"{type(exc).__name__}: {exc}")

    def call(self, method: str, path: str, body: Any = None,
             key: tuple[str, str | None] | None = None) -> Outcome:
        """``key``: (which key, its token); default: the key for reads."""
        label, token = key or self.keys.for_reads()
        attempt = 0
        while True:
            out = self.once(method, path, body, token)
            if out.status in REFUSED_STATUSES:
                self._refuse(out, f"{method} {path}", label)
                return out
            again = out.status == 0 or out.status >= 500 or out.status in RETRIED_STATUSES
            if not again or attempt >= len(self.delays) or self.stop.is_set():
                return out
            if self.stop.wait(self.delays[attempt]):
                return out
            attempt += 1

    def act(self, action: Action) -> Outcome:
        """POST an action with the key of the role that takes it."""
        return self.call("POST", action.path, dict(action.body), self.keys.for_action(action))

    def get(self, path: str) -> Any:
        out = self.call("GET", path)
        if self.refused is not None:
            raise AccessRefused(self.refused)
        if not out.ok:
            raise OSError(f"GET {path}: {out.status or out.error}")
        return out.body

    def _refuse(self, out: Outcome, request: str, label: str) -> None:
        with self._lock:
            if self.refused is None:
                self.refused = Refusal(out.status, _reason(out), request, label)
        self.stop.set()


def _reason(out: Outcome) -> str:
    """intake's reason for a refusal (``{"errors": {"_auth": [...]}}``), else the body."""
    errors = out.body.get("errors") if isinstance(out.body, dict) else None
    if isinstance(errors, dict):
        texts = [str(t) for v in errors.values() for t in (v if isinstance(v, list) else [v])]
        if texts:
            return "; ".join(texts)[:300]
    return (out.error or "refused")[:300]


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class Responder:
    """A department's answer published on ``gridflow.responses`` (``<dept>.<action>``),
    persistent and mandatory, with publisher confirms; the caller's message id is the same
    for a retry, so a retry after a lost confirm is handled once. One connection, shared
    under a lock."""

    def __init__(self, amqp_uri: str) -> None:
        self.amqp_uri = pika_uri(amqp_uri)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._channel: Any = None

    def _open(self) -> Any:
        if self._channel is None or not self._channel.is_open:
            self.close_quietly()
            params = pika.URLParameters(self.amqp_uri)
            params.heartbeat = 0  # used from worker threads now and then: no heartbeats
            params.socket_timeout = params.blocked_connection_timeout = 10
            self._conn = pika.BlockingConnection(params)
            self._channel = self._conn.channel()
            self._channel.confirm_delivery()
        return self._channel

    def publish(self, action: Action, message_id: str) -> Outcome:
        body = json.dumps({**action.body, "case_id": action.case_id}, ensure_ascii=False).encode()
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                     message_id=message_id,
                                     type=f"response.{action.kind}")
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._open().basic_publish(RESPONSES_EXCHANGE, action.routing_key, body,
                                               props, mandatory=True)
                    return Outcome(202, {"sent": message_id})
                except (pika.exceptions.AMQPError, OSError) as exc:
                    self.close_quietly()
                    if attempt == 2:
                        return Outcome(0, None, f"{type(exc).__name__}: {exc}")
        return Outcome(0, None, "unreachable")

    def close_quietly(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = self._channel = None

    def close(self) -> None:
        with self._lock:
            self.close_quietly()


class Consumer(threading.Thread):
    """Consumes the department and tier queues with consumer priority -1, so that a
    person's own ``gridflow subscribe`` on the same queue (priority 0) gets the messages
    while it keeps up. Drops nothing: each message is handed to ``on_message`` (which plans
    what to do) and acked after. Reconnects after a broker restart; queues that do not
    exist yet are looked for again at the next connect."""

    def __init__(self, amqp_uri: str, queues: Sequence[str],
                 on_message: Callable[[str, str, Mapping[str, Any]], None],
                 stop: threading.Event, prefetch: int = 50) -> None:
        super().__init__(name="simulator-consumer", daemon=True)
        self.amqp_uri = pika_uri(amqp_uri)
        self.queues = list(queues)
        self.on_message = on_message
        self.stop_event = stop
        self.prefetch = prefetch
        self.consuming: list[str] = []
        self.received = 0
        self.bad = 0

    def run(self) -> None:
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                self._session()
                delay = 1.0
            except (pika.exceptions.AMQPError, OSError) as exc:
                if self.stop_event.is_set():
                    break
                log.warning("broker connection lost (%s); reconnecting in %.0fs",
                            type(exc).__name__, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 30.0)

    def _session(self) -> None:
        params = pika.URLParameters(self.amqp_uri)
        params.heartbeat = 30
        conn = pika.BlockingConnection(params)
        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=self.prefetch)
            missing = []
            self.consuming = []
            for queue in self.queues:
                probe = conn.channel()
                try:
                    probe.queue_declare(queue, passive=True)
                    probe.close()
                except pika.exceptions.ChannelClosedByBroker:
                    missing.append(queue)
                    continue
                channel.basic_consume(queue, self._handle,
                                      arguments={"x-priority": CONSUMER_PRIORITY})
                self.consuming.append(queue)
            if missing:
                log.warning("queues not there yet (is gridflow running?): %s; looking again "
                            "in 10 s", ", ".join(missing))
            log.info("consuming %d queues with x-priority %d", len(self.consuming),
                     CONSUMER_PRIORITY)
            retry_missing = time.monotonic() + 10.0
            while not self.stop_event.is_set():
                conn.process_data_events(time_limit=0.25)
                if missing and time.monotonic() > retry_missing:
                    return  # reconnect, and look for the missing queues again
        finally:
            with contextlib.suppress(Exception):
                conn.close()  # unacked messages (none: each is acked at once) go back

    def _handle(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        self.received += 1
        try:
            msg = json.loads(body)
            if not isinstance(msg, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            self.bad += 1
            log.warning("message %s on %s is not a JSON object; rejected to the DLQ",
                        props.message_id, method.routing_key)
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        try:
            self.on_message(method.routing_key, props.message_id or "", msg)
        except Exception:  # a bug in planning must not stop the district
            log.exception("could not plan for message %s (%s)", props.message_id, props.type)
        channel.basic_ack(method.delivery_tag)
