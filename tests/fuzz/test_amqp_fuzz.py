"""Fuzzing every AMQP front door, on SQLite and PostgreSQL: the four services' queues
(``gridflow.intake``, ``gridflow.routing``, ``gridflow.escalation``, ``gridflow.notify``)
and the departments' answers (``gridflow.responses``).

The four services run in this process on the real broker and database. A few cases are taken
through the whole loop first, and every event the pipeline published on the way is kept: the
valid envelopes that the fuzzing mutates. Messages go in by the default exchange (routing
key = the queue) and by the real exchanges with plausible routing keys (an event's type on
``gridflow.events`` reaches every queue bound to it; ``<department>.<action>`` on
``gridflow.responses``): bodies that are not JSON, envelopes with fields dropped or of the
wrong type, a wrong ``schema_version``, an unknown type, valid shapes with impossible values
or for unknown cases, odd properties and headers (no ``message_id``, huge headers).

For each message, a spy on the consumer counts its deliveries and how each ended. Then:

- a message the consumer's decoder refuses (checked here with the same decoder) is
  dead-lettered at once, by every queue it reached, into ``<queue>.dlq`` with the reason
  in ``x-gridflow-reason``, never retried;
- a valid message (always about a case nobody knows) is dead-lettered, or handled and acked;
  if it was retried, the handler asked for it (``RetryLater``: the event overtook its
  cause), it did not crash on the input;
- no queue delivered it more often than the attempts allow (no hot loop);
- no service's database changed: nothing stored, nothing put in an outbox (so nothing
  published).

At the end the services are all alive, nothing waits in a work or retry queue, and a new
report still goes through the whole pipeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import amqp
import kombu
import pytest
import requests
from fuzz_strategies import (
    BAD_DATES,
    encode,
    fuzz_settings,
    json_values,
    mutated,
    odd_text,
    poisoned,
    raw_bodies,
)
from fuzz_support import DbState, diff, new_case, post, resolve_all, settled, until
from hypothesis import assume, given
from hypothesis import strategies as st

from services.escalation.service import EscalationService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared.amqp import topology as topo
from shared.clock import FakeClock
from shared.events import InvalidEvent, decode_event
from shared.extensions.consumer import EventQueueConsumer
from shared.responses import ACTIONS, RESPONSE_PREFIX, decode_response
from support import DEMO_CELL, wait_for

ALL = (IntakeService, RoutingService, EscalationService, NotifyService)
MAX_ATTEMPTS = 2  # a retried message is dead-lettered after one retry (1 s): a short test
SERVICES = tuple(topo.SUBSCRIPTIONS)
DOORS = (*SERVICES, "responses")
FUZZ_ID = "x-fuzz-id"
COMMUNITY = {"name": "胡涛", "tier": "community", "code": "511802001001"}
STREET = {"name": "李娜", "tier": "street", "code": "511802001"}
GRID_WORKER = {"name": "邓海燕", "tier": "compound", "code": DEMO_CELL}
# Events that make a case known to a service that never saw it: valid ones are not refused.
CREATES = {("routing", "case.reported"), ("escalation", "case.routed"),
           ("notify", "case.routed")}
EXAMPLES = 30  # per door


def door_queue(door: str) -> str:
    return topo.RESPONSES_QUEUE if door == "responses" else topo.service_queue(door)


# -- watching the consumers -------------------------------------------------------------------
class Spy:
    """What every consumer did with each fuzzed message (by its ``x-fuzz-id`` header)."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[str, str]]] = defaultdict(list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def fid(message: Any) -> str | None:
            value = (message.headers or {}).get(FUZZ_ID)
            return value if isinstance(value, str) else None

        def wrap(name: str, what: Callable[..., tuple[str, str]]) -> None:
            original = getattr(EventQueueConsumer, name)

            def spied(qc: Any, *args: Any, **kwargs: Any) -> Any:
                kind, detail = what(*args, **kwargs)
                message = args[1] if name in ("_on_message", "dead_letter", "retry") else args[0]
                key = fid(message)
                if key is not None:
                    self.records[key].append((kind, detail))
                return original(qc, *args, **kwargs)

            monkeypatch.setattr(EventQueueConsumer, name, spied)

        wrap("_on_message", lambda queue, message: ("delivered", queue))
        wrap("dead_letter", lambda queue, message, reason, *_, **__: ("dead", queue))
        wrap("retry", lambda queue, message, attempts, reason, *_, **__: ("retry", reason))
        wrap("ack", lambda message: ("ack", ""))
        wrap("requeue", lambda message: ("requeue", ""))

    def kinds(self, key: str, kind: str) -> list[str]:
        return [d for k, d in self.records.get(key, []) if k == kind]

    def settled(self, key: str) -> int:
        """Deliveries that ended for good: acked, and not to be retried."""
        return len(self.kinds(key, "ack")) - len(self.kinds(key, "retry"))


# -- the messages -------------------------------------------------------------------------------
@dataclass
class Msg:
    door: str
    exchange: str
    routing_key: str
    body: bytes
    props: dict[str, Any]

    def __repr__(self) -> str:  # what hypothesis shows of a failing example
        body = self.body if len(self.body) <= 600 else self.body[:400] + b"..." + self.body[-100:]
        headers = {k: (v if len(repr(v)) < 200 else f"<{len(repr(v))} chars>")
                   for k, v in (self.props.get("application_headers") or {}).items()}
        props = {**self.props, "application_headers": headers}
        return (f"Msg({self.door}: exchange={self.exchange!r} key={self.routing_key!r} "
                f"props={props} body={body!r} ({len(self.body)} bytes))")

    @property
    def targets(self) -> tuple[str, ...]:
        """The work queues the broker routes it to."""
        if self.exchange == "":
            return (self.routing_key,)
        if self.exchange == topo.RESPONSES_EXCHANGE:
            return (topo.RESPONSES_QUEUE,)
        return tuple(topo.service_queue(s) for s, types in topo.SUBSCRIPTIONS.items()
                     if self.routing_key in types)


def _shortstr(value: str) -> bool:
    try:
        return len(value.encode()) <= 255
    except UnicodeEncodeError:
        return False


def _header_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
        # (an infinite or NaN float: RabbitMQ closes the publisher's connection, 541)
        st.floats(allow_nan=False, allow_infinity=False), odd_text().filter(_shortstr),
        st.lists(st.integers(0, 9), max_size=3), st.dictionaries(
            st.text(max_size=5).filter(_shortstr), st.integers(0, 9), max_size=2),
    )


@st.composite
def properties(draw: Any, type_: str | None) -> dict[str, Any]:
    headers = draw(st.one_of(
        st.just({}),
        st.dictionaries(st.one_of(st.sampled_from(["schema_version", "x-death", topo.H_QUEUE,
                                                   topo.H_REASON, "x-first-death-queue"]),
                                  odd_text().filter(lambda s: _shortstr(s) and s not in (
                                      FUZZ_ID, topo.H_ATTEMPTS))),
                        _header_values(), max_size=4),
        st.just({"x-huge": "h" * 60_000}),
        # only numbers: a failing message whose attempts header is not one kills its
        # service (test_fuzz_findings.py::test_an_odd_attempts_header_…, expected to fail
        # until shared/extensions/consumer.py reads the header defensively)
        st.fixed_dictionaries({topo.H_ATTEMPTS: st.sampled_from(
            ["7", -5, 0, 1, 99, 2**62, 1.5, True])}),
        st.just({f"x-many-{i}": i for i in range(500)}),
    ))
    props: dict[str, Any] = {"application_headers": headers, "delivery_mode": 2}
    message_id = draw(st.one_of(st.builds(lambda: str(uuid.uuid4())), st.none(), st.just(""),
                                odd_text().filter(_shortstr)))
    if message_id is not None:
        props["message_id"] = message_id
    kind = draw(st.one_of(st.just(type_), st.none(), odd_text().filter(_shortstr)))
    if kind is not None:
        props["type"] = kind
    content_type = draw(st.sampled_from(["application/json", None, "text/plain",
                                         "application/octet-stream", "application/json; x"]))
    if content_type is not None:
        props["content_type"] = content_type
    return props


def _unknown_case(draw: Any) -> str:
    return f"20991231-{draw(st.integers(100_000, 999_999))}"


@st.composite
def envelopes(draw: Any, bases: dict[str, dict[str, Any]], types: tuple[str, ...]) -> Any:
    """A pipeline event about a case nobody knows: valid, or with something wrong."""
    type_ = draw(st.sampled_from(sorted(t for t in types if t in bases) or sorted(bases)))
    env = json.loads(json.dumps(bases[type_]))
    env["case_id"] = _unknown_case(draw)
    env["event_id"] = str(uuid.uuid4())
    how = draw(st.sampled_from(["valid", "valid", "mutated", "mutated", "values", "values",
                                "version", "type", "date"]))
    if how == "mutated":
        return draw(mutated(env, ("event_id", "type", "schema_version", "occurred_at",
                                  "producer", "case_id", "data")))
    if how == "values":
        data = draw(poisoned(env["data"]))
        return {**env, "data": data}
    if how == "version":
        env["schema_version"] = draw(st.sampled_from([0, 2, -1, "1", 1.5, True, None, 2**40]))
    elif how == "type":
        env["type"] = draw(st.one_of(st.sampled_from(["case.exploded", "", "CASE.ROUTED",
                                                      "case.routed ", *sorted(bases)]),
                                     odd_text()))
    elif how == "date":
        env[draw(st.sampled_from(["occurred_at", "data"]))] = draw(st.sampled_from(BAD_DATES))
    return env


@st.composite
def service_messages(draw: Any, door: str, world: World) -> Msg:
    types = topo.SUBSCRIPTIONS[door]
    body: Any = draw(st.one_of(
        envelopes(world.bases, types), envelopes(world.bases, types),
        envelopes(world.bases, types), raw_bodies(), json_values(),
    ))
    data = body if isinstance(body, bytes) else encode(body, ascii_only=draw(st.booleans()))
    type_ = body.get("type") if isinstance(body, dict) else None
    route = draw(st.sampled_from(["default", "default", "default", "events", "events",
                                  "nobody's"]))
    if route == "events":
        key = type_ if isinstance(type_, str) and type_ in types else draw(st.sampled_from(types))
        exchange = topo.EVENTS_EXCHANGE
    elif route == "nobody's":  # no queue is bound for it: kept in gridflow.unrouted
        key = draw(st.sampled_from(["case.exploded", "#", "", "case.routed.x", "CASE.ROUTED"]))
        exchange = topo.EVENTS_EXCHANGE
    else:
        key, exchange = topo.service_queue(door), ""
    props = draw(properties(type_ if isinstance(type_, str) and _shortstr(type_) else None))
    return Msg(door, exchange, key, data, props)


@st.composite
def response_messages(draw: Any, world: World) -> Msg:
    action = draw(st.sampled_from(ACTIONS))
    valid = {"ack": {"note": "到场"}, "progress": {"note": "处理中", "media_urls": []},
             "resolve": {"note": "处理完毕"},
             "return": {"reason_code": "not_our_responsibility"}}[action]
    case_id = draw(st.sampled_from([world.case_id, "20991231-999999"]))
    base = {"case_id": case_id, **valid}
    body: Any = draw(st.one_of(
        st.just(base), mutated(base, ("case_id", "actor", "note", "media_urls", "reason_code")),
        poisoned(base), poisoned(base), raw_bodies(), json_values(),
    ))
    data = body if isinstance(body, bytes) else encode(body, ascii_only=draw(st.booleans()))
    # departments with no assignment on the case: a valid answer is refused (409 → dead)
    department = draw(st.one_of(st.sampled_from(world.strangers),
                                odd_text().filter(lambda s: _shortstr(s + ".ack"))))
    key = draw(st.one_of(
        st.just(f"{department}.{action}"),
        st.sampled_from(["", "ack", ".ack", "fire.", "fire.ack.extra", "fire.explode", "#",
                         "fire.ACK", "x" * 240 + ".ack"]),
    ))
    exchange = topo.RESPONSES_EXCHANGE
    if draw(st.sampled_from([False] * 4 + [True])):
        exchange, key = "", topo.RESPONSES_QUEUE
    return Msg("responses", exchange, key, data, draw(properties(None)))


def oracle(msg: Msg, queue: str) -> tuple[str, str | None]:
    """What the consumer of ``queue`` should make of ``msg``: ("invalid", None) when its
    decoder refuses it, ("unhandled", type) when no handler takes the type there, else
    ("valid", type)."""
    try:
        if queue == topo.RESPONSES_QUEUE:
            ev = decode_response(msg.body, msg.routing_key, msg.props.get("message_id"))
            handled: tuple[str, ...] = tuple(f"{RESPONSE_PREFIX}{a}" for a in ACTIONS)
        else:
            ev = decode_event(msg.body)
            handled = topo.SUBSCRIPTIONS[queue.removeprefix("gridflow.")]
    except InvalidEvent:
        return "invalid", None
    return ("valid" if ev.type in handled else "unhandled"), ev.type


# -- the services, and what the pipeline published ------------------------------------------------
@dataclass
class World:
    channel: Any
    states: list[DbState]
    containers: dict[str, Any]
    bases: dict[str, dict[str, Any]]  # a valid envelope per event type
    case_id: str
    strangers: list[str]  # departments with no assignment on case_id
    dead: dict[str, list[Any]]  # dead-lettered messages read so far, per x-fuzz-id
    last: Any = None  # the databases after the last message, when known
    processed: int = 0  # valid messages a service took


@pytest.fixture
def world(
    run_services: Any, service_config: dict[str, Any], rabbit_config: dict[str, Any],
    api: requests.Session, spy: Spy,
) -> Iterator[World]:
    clock = FakeClock()
    containers = run_services(*ALL, clock=clock,
                              config={**service_config, "GRIDFLOW_MAX_ATTEMPTS": MAX_ATTEMPTS})
    conn = kombu.Connection(rabbit_config["AMQP_URI"])
    channel = conn.channel()  # a py-amqp channel
    channel.queue_declare("fuzz.capture", exclusive=True)
    channel.queue_bind("fuzz.capture", topo.EVENTS_EXCHANGE, "#")

    # the loop, for the events it publishes
    case = new_case(api, "fa-1", "E0402")  # fire leads, police and urban_mgmt assist
    base = f"/api/v1/cases/{case['case_id']}"
    post(api, f"{base}/assignments/fire/ack", {"note": "马上到"})
    post(api, f"{base}/assignments/fire/progress", {"note": "已到场"})
    post(api, f"{base}/assignments/fire/pause", {"reason": "等待配合"})
    post(api, f"{base}/assignments/fire/resume", {})
    ext = post(api, f"{base}/assignments/fire/extensions", {"extend_by": "1d", "reason": "x"},
               201)["extension"]
    post(api, f"{base}/extensions/{ext['id']}/decision", {"approved": True, "by": STREET})
    post(api, f"{base}/whistle", {"level": "routine", "departments": ["housing"],
                                  "by": COMMUNITY}, 202)
    post(api, f"{base}/assignments/police/return", {"reason_code": "not_our_responsibility"})
    post(api, f"{base}/assignments", {"department": "gas", "by_department": "fire"}, 202)
    other = new_case(api, "fa-2", "E0101")  # sanitation
    resolve_all(api, other)
    post(api, f"/api/v1/cases/{other['case_id']}/verification",
         {"passed": True, "by": GRID_WORKER, "media_urls": ["https://img.example/a.jpg"]})
    post(api, f"/api/v1/cases/{other['case_id']}/rating", {"score": 1, "fixed": False})
    states = [DbState(containers[s]) for s in SERVICES]
    quiet(channel, states)
    case = until(api, case["case_id"], lambda c: True)

    bases: dict[str, dict[str, Any]] = {}
    while (m := channel.basic_get("fuzz.capture", no_ack=True)) is not None:
        env = json.loads(m.body)
        bases[env["type"]] = env
    channel.queue_delete("fuzz.capture")  # bound to "#", it would take the unrouted ones
    on_case = {a["department"] for a in case["assignments"]}
    strangers = sorted({"sanitation", "justice", "traffic", "nobody", "Fire"} - on_case)
    yield World(channel, states, containers, bases, case["case_id"], strangers, {})
    with contextlib.suppress(Exception):
        conn.close()


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    s = Spy()
    s.install(monkeypatch)
    return s


WORK_QUEUES = [door_queue(d) for d in DOORS]
RETRY_QUEUES = [topo.retry_exchange(d) for d in topo.RETRY_DELAYS_S]  # named alike


def quiet(channel: Any, states: list[DbState], quiet_s: float = 1.2) -> None:
    """Wait until no message waits in a work or retry queue and no database changes."""
    for _ in range(3):
        wait_for(lambda: all(channel.queue_declare(q, passive=True).message_count == 0
                             for q in WORK_QUEUES + RETRY_QUEUES), timeout=30,
                 what="empty work and retry queues")
        settled(states, quiet_s=quiet_s)
        if all(channel.queue_declare(q, passive=True).message_count == 0
               for q in WORK_QUEUES + RETRY_QUEUES):
            return
    raise AssertionError("the services do not come to rest")


# -- one message --------------------------------------------------------------------------------
def _dead_letters(world: World, queue: str) -> None:
    dlq = topo.dead_letter_queue(queue)
    while (m := world.channel.basic_get(dlq, no_ack=True)) is not None:
        world.dead.setdefault(str((m.headers or {}).get(FUZZ_ID)), []).append(m)


def _unrouted(world: World, key: str) -> bool:
    while (m := world.channel.basic_get(topo.UNROUTED_QUEUE, no_ack=True)) is not None:
        world.dead.setdefault(str((m.headers or {}).get(FUZZ_ID)), []).append(m)
    return bool(world.dead.get(key))


def deliver(world: World, spy: Spy, msg: Msg, seen: Counter) -> None:
    targets = msg.targets
    outcomes = {q: oracle(msg, q) for q in targets}
    # a valid event of a type that makes a case known is not refused: not what is fuzzed here
    assume(not any(o == "valid" and (q.removeprefix("gridflow."), t) in CREATES
                   for q, (o, t) in outcomes.items()))
    # nothing but the fuzzed messages changes the databases now: the state after one message
    # is the state before the next (unless that one failed)
    before = world.last if world.last is not None else [s() for s in world.states]
    world.last = None
    key = str(uuid.uuid4())
    props = dict(msg.props)
    props["application_headers"] = {**props["application_headers"], FUZZ_ID: key}
    world.channel.basic_publish(amqp.Message(msg.body, **props), exchange=msg.exchange,
                                routing_key=msg.routing_key)
    if not targets:  # nobody is bound for it: kept in gridflow.unrouted
        seen["unrouted"] += 1
        wait_for(lambda: _unrouted(world, key), what=f"{msg!r} unrouted")
        return
    wait_for(lambda: spy.settled(key) >= len(targets), timeout=15,
             what=f"every queue done with {msg!r}: {spy.records.get(key)}")

    for queue, (outcome, _type) in outcomes.items():
        seen[f"{outcome}:{'dead' if queue in spy.kinds(key, 'dead') else 'taken'}"] += 1
    seen["retried"] += bool(spy.kinds(key, "retry"))
    delivered = spy.kinds(key, "delivered")
    assert len(delivered) <= len(targets) * MAX_ATTEMPTS, (msg, spy.records[key])
    dead = spy.kinds(key, "dead")
    retried = spy.kinds(key, "retry")
    for queue, (outcome, _type) in outcomes.items():
        if outcome != "valid":  # refused by the decoder, or no handler: dead at once
            assert dead.count(queue) == 1, (msg, queue, outcome, spy.records[key])
    if all(o != "valid" for o, _ in outcomes.values()):
        assert not retried, (msg, spy.records[key])
    for reason in retried:  # the handler asked for a retry; it did not crash on the input
        assert reason.startswith("RetryLater:"), (msg, reason)
    for queue in set(dead):
        wait_for(lambda q=queue: _dead_letters(world, q) or any(
            (m.headers or {}).get(topo.H_QUEUE) == q for m in world.dead.get(key, [])),
            what=f"{msg!r} in {queue}.dlq")
    for m in world.dead.get(key, []):
        assert (m.headers or {}).get(topo.H_REASON), (msg, m.headers)
        body = m.body if isinstance(m.body, bytes) else m.body.encode("utf-8", "surrogatepass")
        assert body == msg.body, (msg, m.body[:300])  # dead-lettered as it came
    if all(q in dead for q in targets):  # refused everywhere: nothing kept, nothing sent
        after = [s() for s in world.states]
        assert after == before, (msg, [diff(b, a) for b, a in zip(before, after, strict=True)])
        world.last = after
    else:  # a valid event some service took (escalation remembers a stop that overtook the
        # routing): what it does may go on in other services; wait for it
        world.processed += 1
        quiet(world.channel, world.states, quiet_s=0.3)


# GRIDFLOW_FUZZ_STATS=1 (with -s): print how the messages of each door ended
STATS = bool(os.environ.get("GRIDFLOW_FUZZ_STATS"))


def test_every_amqp_front_door_survives_fuzzing(
    world: World, spy: Spy, api: requests.Session
) -> None:
    for door in DOORS:
        strategy = (response_messages(world) if door == "responses"
                    else service_messages(door, world))
        seen: Counter = Counter()

        @fuzz_settings(EXAMPLES)
        @given(strategy)
        def run(msg: Msg) -> None:
            deliver(world, spy, msg, seen)  # noqa: B023 (run now, in this loop)

        run()
        if STATS:
            print(f"{door}: {dict(sorted(seen.items()))}")

    # nothing loops on: the work and retry queues are empty and stay so
    delivered = sum(len(spy.kinds(k, "delivered")) for k in spy.records)
    settled(world.states, quiet_s=1.5)
    assert sum(len(spy.kinds(k, "delivered")) for k in spy.records) == delivered
    for q in WORK_QUEUES + RETRY_QUEUES:
        assert world.channel.queue_declare(q, passive=True).message_count == 0, q
    # the services are alive, and a new report goes through the whole pipeline
    for c in world.containers.values():
        assert not c._died.ready(), f"{c.service_name} died"
    new_case(api, "fa-after", "E0801")
