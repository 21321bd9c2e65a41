"""The AMQP topology: quorum work queues, dead-letter and retry queues, bindings, routing keys."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from shared.amqp.topology import (
    DELIVERY_LIMIT,
    DISPATCH_EXCHANGE,
    DISPATCH_TIERS,
    DLX,
    EVENTS_EXCHANGE,
    EXCHANGES,
    RESPONSES_EXCHANGE,
    RESPONSES_QUEUE,
    RETRY_DELAYS_S,
    SUBSCRIPTIONS,
    UNROUTED_EXCHANGE,
    UNROUTED_QUEUE,
    QueueSpec,
    dead_letter_queue,
    declare,
    dispatch_queue,
    dispatch_routing_key,
    queues,
    retry_delay,
    retry_exchange,
    service_queue,
    tier_queue,
    tier_recipient,
    tier_routing_key,
    work_queue_arguments,
)
from shared.catalogue import Catalogue, CatalogueError
from shared.events import INTERNAL, PUBLIC
from shared.reference import load_reference

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"
DEPARTMENTS = sorted(load_reference(DEMO).catalogue.departments)
SERVICES = ("routing", "escalation", "notify", "intake")
TIERS = ("compound", "area", "community", "street", "district")


def all_queues() -> dict[str, QueueSpec]:
    specs = queues(DEPARTMENTS)
    by_name = {s.name: s for s in specs}
    assert len(by_name) == len(specs), "queue names must be unique"
    return by_name


def work_queue_names() -> list[str]:
    return (
        [service_queue(s) for s in SERVICES]
        + [dispatch_queue(d) for d in DEPARTMENTS]
        + [tier_queue(t) for t in TIERS]
        + [RESPONSES_QUEUE]
    )


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: '*' is one word, '#' is zero or more words."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


def routed_to(exchange: str, key: str) -> set[str]:
    """Queues a message published to a topic exchange with this key lands in."""
    return {
        spec.name
        for spec in all_queues().values()
        for ex, pattern in spec.bindings
        if ex == exchange and topic_matches(pattern, key)
    }


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("fire.#", "fire.case.assigned", True),
        ("fire.#", "fire", True),
        ("fire.#", "firefly.case.assigned", False),
        ("*.case.assigned", "fire.case.assigned", True),
        ("*.case.assigned", "case.assigned", False),
        ("case.routed", "case.routed", True),
        ("case.routed", "case.routed.v2", False),
    ],
)
def test_the_topic_matcher_these_tests_use(pattern, key, matches):
    assert topic_matches(pattern, key) is matches


# -- names -------------------------------------------------------------------------------------


def test_queue_and_exchange_names():
    assert service_queue("routing") == "gridflow.routing"
    assert dispatch_queue("urban_mgmt") == "dispatch.urban_mgmt"
    assert dead_letter_queue("gridflow.routing") == "gridflow.routing.dlq"
    assert retry_exchange(30) == "gridflow.retry.30s"
    assert (EVENTS_EXCHANGE, DISPATCH_EXCHANGE, DLX) == (
        "gridflow.events",
        "gridflow.dispatch",
        "gridflow.dlx",
    )


def test_dispatch_routing_key_is_department_dot_event():
    assert dispatch_routing_key("urban_mgmt", "case.assigned") == "urban_mgmt.case.assigned"
    assert dispatch_routing_key("fire", "case.escalated") == "fire.case.escalated"


def test_tier_queue_recipient_and_routing_key():
    assert tier_queue("street") == "dispatch.tier.street"
    assert tier_recipient("street", "511802001") == "tier.street.511802001"
    assert tier_routing_key("street", "511802001", "case.escalated") == (
        "tier.street.511802001.case.escalated"
    )
    assert tier_routing_key("district", "511802", "case.whistled") == (
        "tier.district.511802.case.whistled"
    )


def test_the_tiers_with_a_public_queue_are_the_escalation_path():
    assert DISPATCH_TIERS == TIERS


# -- work queues -------------------------------------------------------------------------------


def test_there_is_a_work_queue_per_service_and_per_department():
    names = set(all_queues())
    assert {service_queue(s) for s in SERVICES} <= names
    assert {dispatch_queue(d) for d in DEPARTMENTS} <= names
    assert "dispatch.urban_mgmt" in names and "dispatch.fire" in names


@pytest.mark.parametrize("name", work_queue_names())
def test_every_work_queue_is_a_quorum_queue_that_dead_letters_safely(name):
    assert all_queues()[name].arguments == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "gridflow.dlx",
        "x-dead-letter-routing-key": name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": DELIVERY_LIMIT,
    }


def test_delivery_limit_parks_a_crash_looping_message():
    assert DELIVERY_LIMIT == 20


def test_work_queue_arguments_name_the_queue_itself():
    assert work_queue_arguments("x.y")["x-dead-letter-routing-key"] == "x.y"


@pytest.mark.parametrize("name", work_queue_names())
def test_every_work_queue_has_a_quorum_dead_letter_queue_bound_by_its_name(name):
    dlq = all_queues()[f"{name}.dlq"]
    assert dlq.arguments == {"x-queue-type": "quorum"}
    assert dlq.bindings == ((DLX, name),)


def test_a_dead_lettered_message_lands_only_in_its_own_dlq():
    # DLX is a direct exchange: the routing key is the work queue's name.
    for name in work_queue_names():
        landed = {s.name for s in all_queues().values() if (DLX, name) in s.bindings}
        assert landed == {f"{name}.dlq"}


def test_dead_letter_queues_do_not_dead_letter_again():
    for spec in all_queues().values():
        if spec.name.endswith(".dlq"):
            assert "x-dead-letter-exchange" not in spec.arguments


def department_queue_names(departments: list[str]) -> list[str]:
    return [
        s.name
        for s in queues(departments)
        if s.name.startswith("dispatch.") and not s.name.startswith("dispatch.tier.")
    ]


def test_departments_are_declared_once_in_sorted_order():
    assert department_queue_names(["police", "fire"]) == [
        "dispatch.fire",
        "dispatch.fire.dlq",
        "dispatch.police",
        "dispatch.police.dlq",
    ]


def test_no_departments_no_department_queues_but_the_tier_queues_stay():
    assert department_queue_names([]) == []
    assert [s.name for s in queues([]) if s.name.startswith("dispatch.")] == [
        name for t in TIERS for name in (f"dispatch.tier.{t}", f"dispatch.tier.{t}.dlq")
    ]


# -- retry queues -------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", RETRY_DELAYS_S)
def test_retry_queue_holds_a_message_for_its_delay_then_returns_it(delay):
    spec = all_queues()[f"gridflow.retry.{delay}s"]
    assert spec.arguments["x-queue-type"] == "quorum"
    assert spec.arguments["x-message-ttl"] == delay * 1000
    # Expired messages go through the default exchange, whose routing key is a queue name.
    assert spec.arguments["x-dead-letter-exchange"] == ""
    assert "x-dead-letter-routing-key" not in spec.arguments
    assert spec.arguments["x-dead-letter-strategy"] == "at-least-once"
    assert spec.arguments["x-overflow"] == "reject-publish"
    assert spec.bindings == ((retry_exchange(delay), "#"),)


def test_retry_schedule():
    assert RETRY_DELAYS_S == (1, 5, 30, 120, 600)
    assert [retry_delay(n) for n in range(1, 6)] == [1, 5, 30, 120, 600]


@pytest.mark.parametrize(("attempt", "delay"), [(0, 1), (-3, 1), (6, 600), (1000, 600)])
def test_retry_delay_is_clamped_to_the_schedule(attempt, delay):
    assert retry_delay(attempt) == delay


def test_every_retry_delay_has_an_exchange_and_a_queue():
    exchanges = {name: kind for name, kind, _ in EXCHANGES}
    for n in range(0, 10):
        delay = retry_delay(n)
        assert exchanges[retry_exchange(delay)] == "fanout"
        assert f"gridflow.retry.{delay}s" in all_queues()


# -- subscriptions --------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_service_queue_binds_exactly_its_subscriptions(service):
    spec = all_queues()[service_queue(service)]
    assert set(spec.bindings) == {(EVENTS_EXCHANGE, t) for t in SUBSCRIPTIONS[service]}
    assert len(spec.bindings) == len(SUBSCRIPTIONS[service])


def test_subscriptions_name_internal_events_only():
    for service, types in SUBSCRIPTIONS.items():
        assert set(types) <= set(INTERNAL), service


def test_subscriptions_are_the_expected_flow():
    assert {service: set(types) for service, types in SUBSCRIPTIONS.items()} == {
        # routing routes reports, summons the departments a whistle names, plans requested
        # departments and finds who takes a returned assignment
        "routing": {
            "case.reported",
            "case.whistled",
            "assignment.requested",
            "assignment.returned",
        },
        # escalation runs every assignment's clocks, and a closed case's follow-up clock
        "escalation": {
            "case.routed",
            "assignments.added",
            "assignment.acknowledged",
            "assignment.resolved",
            "assignment.paused",
            "assignment.resumed",
            "assignment.reopened",
            "extension.decided",
            "assignment.returned",
            "case.closed",
        },
        # notify tells departments, grid tiers and reporters
        "notify": {
            "case.routed",
            "assignments.added",
            "case.escalated",
            "case.reminded",
            "case.tier_changed",
            "case.needs_dispatch",
            "assignment.progressed",
            "task.created",
            "case.resolved",
            "case.closed",
            "case.reopened",
            "reporter.attached",
            "reporter.detached",
            "assignment.reopened",
        },
        # intake keeps the case read model
        "intake": {
            "case.routed",
            "assignments.added",
            "assignment.dispatched",
            "case.escalated",
            "case.reminded",
            "case.tier_changed",
            "assignment.rescheduled",
            "supervision.opened",
            "supervision.closed",
            "case.needs_dispatch",
            "followup.due",
        },
    }


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_subscribes_to_each_event_once(service):
    assert len(set(SUBSCRIPTIONS[service])) == len(SUBSCRIPTIONS[service])


def test_intake_does_not_consume_what_it_produces():
    produced_by_intake = {
        "case.reported",
        "case.whistled",
        "assignment.acknowledged",
        "assignment.resolved",
        "assignment.paused",
        "assignment.resumed",
        "assignment.reopened",
        "extension.decided",
        "case.resolved",
        "assignment.requested",
        "assignment.returned",
        "assignment.progressed",
        "task.created",
        "case.verified",
        "case.closed",
        "case.reopened",
        "case.rated",
        "reporter.attached",
        "reporter.detached",
    }
    assert not produced_by_intake & set(SUBSCRIPTIONS["intake"])


def test_every_internal_event_but_the_verification_and_the_rating_has_a_consumer():
    consumed = {t for types in SUBSCRIPTIONS.values() for t in types}
    # case.verified and case.rated have no consumer yet: they fall through to
    # gridflow.unrouted (case.closed and case.reopened carry what the others act on).
    assert set(INTERNAL) - consumed == {"case.verified", "case.rated"}
    assert routed_to(EVENTS_EXCHANGE, "case.verified") == set()
    assert routed_to(EVENTS_EXCHANGE, "case.rated") == set()
    assert routed_to(EVENTS_EXCHANGE, "case.resolved") == {service_queue("notify")}


@pytest.mark.parametrize("type_", sorted(INTERNAL))
def test_an_internal_event_reaches_exactly_the_services_subscribed(type_):
    expected = {service_queue(s) for s, types in SUBSCRIPTIONS.items() if type_ in types}
    assert routed_to(EVENTS_EXCHANGE, type_) == expected


def _module_constants(tree: ast.Module) -> dict[str, set[str]]:
    """Module-level names bound to a literal dict (its keys), tuple, list or set of strings."""
    out: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        items = value.keys if isinstance(value, ast.Dict) else getattr(value, "elts", None)
        if items is not None:
            out[target.id] = {i.value for i in items if isinstance(i, ast.Constant)}
    return out


def _handled_types(service: str) -> set[str]:
    """Event types named in @event_handler(...) decorators of services/<service>/service.py,
    as string constants or as ``*NAME`` of a module-level dict / tuple of them."""
    tree = ast.parse((REPO / "services" / service / "service.py").read_text(encoding="utf-8"))
    constants = _module_constants(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if (
                    isinstance(dec, ast.Call)
                    and isinstance(dec.func, ast.Name)
                    and dec.func.id == "event_handler"
                ):
                    for arg in dec.args:
                        if isinstance(arg, ast.Constant):
                            found.add(arg.value)
                        elif isinstance(arg, ast.Starred) and isinstance(arg.value, ast.Name):
                            found |= constants[arg.value.id]
                        else:
                            raise AssertionError(f"{service}: cannot read {ast.dump(arg)}")
    return found


def test_handled_types_reads_constants_and_starred_module_names():
    tree = ast.parse(
        "A: dict = {'x.one': 1, 'x.two': 2}\n"
        "B = ('y.one',)\n"
        "@event_handler('z.one', *A)\n"
        "def f(): pass\n"
    )
    assert _module_constants(tree) == {"A": {"x.one", "x.two"}, "B": {"y.one"}}


@pytest.mark.parametrize("service", SERVICES)
def test_subscriptions_match_the_services_event_handlers(service):
    assert _handled_types(service) == set(SUBSCRIPTIONS[service])


# -- dispatch --------------------------------------------------------------------------------------


@pytest.mark.parametrize("department", DEPARTMENTS)
def test_dispatch_queue_is_bound_to_everything_for_its_department(department):
    assert all_queues()[dispatch_queue(department)].bindings == (
        (DISPATCH_EXCHANGE, f"{department}.#"),
    )


@pytest.mark.parametrize("type_", sorted(PUBLIC))
@pytest.mark.parametrize("department", ["fire", "urban_mgmt", "market_supervision"])
def test_a_public_message_reaches_only_its_departments_queue(department, type_):
    key = dispatch_routing_key(department, type_)
    assert routed_to(DISPATCH_EXCHANGE, key) == {dispatch_queue(department)}


def test_a_department_whose_code_prefixes_another_gets_only_its_own():
    specs = {s.name: s for s in queues(["gas", "gas_station"])}
    bound = [
        n
        for n, s in specs.items()
        for ex, p in s.bindings
        if ex == DISPATCH_EXCHANGE and topic_matches(p, "gas.case.assigned")
    ]
    assert bound == ["dispatch.gas"]


def test_department_codes_are_single_routing_key_words():
    for code in DEPARTMENTS:
        assert code and not set(code) & {".", "#", "*", " "}, code


def test_a_message_for_an_unknown_department_reaches_no_queue():
    assert routed_to(DISPATCH_EXCHANGE, "aliens.case.assigned") == set()


# -- dispatch to grid tiers ----------------------------------------------------------------------


@pytest.mark.parametrize("tier", TIERS)
def test_tier_queue_is_bound_to_everything_for_its_tier(tier):
    assert all_queues()[tier_queue(tier)].bindings == ((DISPATCH_EXCHANGE, f"tier.{tier}.#"),)


@pytest.mark.parametrize("type_", sorted(PUBLIC))
@pytest.mark.parametrize(
    ("tier", "code"),
    [
        ("compound", "511802001001101"),
        ("area", "5118020010011"),
        ("community", "511802001001"),
        ("street", "511802001"),
        ("district", "511802"),
    ],
)
def test_a_tier_message_reaches_only_its_tiers_queue(tier, code, type_):
    assert routed_to(DISPATCH_EXCHANGE, tier_routing_key(tier, code, type_)) == {tier_queue(tier)}


def test_a_nodes_own_system_can_bind_its_recipient_key():
    own = f"{tier_recipient('community', '511802001001')}.#"
    assert topic_matches(own, tier_routing_key("community", "511802001001", "case.escalated"))
    assert not topic_matches(own, tier_routing_key("community", "511802002001", "case.escalated"))
    assert not topic_matches(own, tier_routing_key("street", "511802001001", "case.escalated"))


def test_a_message_for_a_tier_without_a_queue_reaches_no_queue():
    assert routed_to(DISPATCH_EXCHANGE, tier_routing_key("building", "1", "case.assigned")) == set()


def test_no_department_may_be_called_tier():
    # dispatch.tier would be bound to tier.# and take every grid tier's messages.
    assert "tier" not in DEPARTMENTS
    spec = {s.name: s for s in queues(["tier"])}[dispatch_queue("tier")]
    assert topic_matches(spec.bindings[0][1], tier_routing_key("street", "511802001", "x"))
    with pytest.raises(CatalogueError, match="not 'tier'"):
        Catalogue.from_dict({"departments": [{"code": "tier", "name": "层级"}], "families": []})


# -- departments answer: gridflow.responses ------------------------------------------------------


def test_responses_exchange_and_queue_names():
    assert (RESPONSES_EXCHANGE, RESPONSES_QUEUE) == ("gridflow.responses", "gridflow.responses")


def test_the_responses_queue_takes_every_departments_answers():
    assert all_queues()[RESPONSES_QUEUE].bindings == ((RESPONSES_EXCHANGE, "#"),)


@pytest.mark.parametrize("action", ["ack", "progress", "resolve", "return"])
@pytest.mark.parametrize("department", ["fire", "urban_mgmt", "market_supervision"])
def test_a_departments_answer_reaches_only_the_responses_queue(department, action):
    assert routed_to(RESPONSES_EXCHANGE, f"{department}.{action}") == {RESPONSES_QUEUE}


def test_answers_and_events_do_not_cross_exchanges():
    assert routed_to(EVENTS_EXCHANGE, "fire.ack") == set()
    assert RESPONSES_QUEUE not in routed_to(EVENTS_EXCHANGE, "case.reported")
    assert RESPONSES_QUEUE not in routed_to(DISPATCH_EXCHANGE, "fire.case.assigned")


def test_the_responses_queue_is_declared_even_without_departments():
    assert RESPONSES_QUEUE in {s.name for s in queues([])}
    assert dead_letter_queue(RESPONSES_QUEUE) in {s.name for s in queues([])}


# -- exchanges and the unrouted safety net -------------------------------------------------------


def test_exchanges_and_their_types():
    kinds = {name: kind for name, kind, _ in EXCHANGES}
    assert kinds[EVENTS_EXCHANGE] == "topic"
    assert kinds[DISPATCH_EXCHANGE] == "topic"
    assert kinds[RESPONSES_EXCHANGE] == "topic"
    assert kinds[DLX] == "direct"
    assert kinds[UNROUTED_EXCHANGE] == "fanout"
    assert len(kinds) == len(EXCHANGES)


@pytest.mark.parametrize("exchange", [EVENTS_EXCHANGE, DISPATCH_EXCHANGE, RESPONSES_EXCHANGE])
def test_unroutable_messages_are_kept_not_dropped(exchange):
    args = {name: a for name, _, a in EXCHANGES}[exchange]
    assert args == {"alternate-exchange": UNROUTED_EXCHANGE}


def test_unrouted_queue_is_bounded_and_bound_to_the_alternate_exchange():
    spec = all_queues()[UNROUTED_QUEUE]
    assert spec.bindings == ((UNROUTED_EXCHANGE, ""),)
    assert spec.arguments == {
        "x-queue-type": "quorum",
        "x-max-length": 100_000,
        "x-message-ttl": 7 * 24 * 3600 * 1000,
    }


def test_every_binding_names_a_declared_exchange():
    exchanges = {name for name, _, _ in EXCHANGES}
    for spec in all_queues().values():
        for exchange, _ in spec.bindings:
            assert exchange in exchanges, (spec.name, exchange)


# -- declare ------------------------------------------------------------------------------------


class RecordingChannel:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str):
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record


def test_declare_declares_durable_exchanges_then_queues_with_their_bindings():
    channel = RecordingChannel()
    declare(channel, ["fire", "police"])
    exchange_calls = [c for c in channel.calls if c[0] == "exchange_declare"]
    queue_calls = [c for c in channel.calls if c[0] == "queue_declare"]
    bind_calls = [c for c in channel.calls if c[0] == "queue_bind"]

    assert [c[1] for c in exchange_calls] == [(name, kind) for name, kind, _ in EXCHANGES]
    assert all(c[2]["durable"] and not c[2]["auto_delete"] for c in exchange_calls)
    first_queue = channel.calls.index(queue_calls[0])
    assert all(channel.calls.index(c) < first_queue for c in exchange_calls)

    specs = queues(["fire", "police"])
    assert [c[1][0] for c in queue_calls] == [s.name for s in specs]
    for call, spec in zip(queue_calls, specs, strict=True):
        assert call[2] == {"durable": True, "auto_delete": False, "arguments": dict(spec.arguments)}
    assert [c[1] for c in bind_calls] == [
        (spec.name, exchange, key) for spec in specs for exchange, key in spec.bindings
    ]
    assert ("dispatch.fire", "gridflow.dispatch", "fire.#") in [c[1] for c in bind_calls]
    assert ("dispatch.tier.street", "gridflow.dispatch", "tier.street.#") in [
        c[1] for c in bind_calls
    ]
    assert ("gridflow.responses", "gridflow.responses", "#") in [c[1] for c in bind_calls]
    assert ("gridflow.responses", "topic") in [c[1] for c in exchange_calls]
