"""A consumer whose broker connection breaks while a handler runs must survive it: the ack
cannot be sent, the broker redelivers, the service reconnects and carries on (the chaos run
found a reset socket's failed ack killing the container and with it the process)."""

from __future__ import annotations

from typing import Any

import eventlet
import kombu
from eventlet.event import Event as Gate
from nameko.testing.utils import get_rabbit_connections, reset_rabbit_connections

from shared.amqp import topology as topo
from shared.events import Event
from shared.extensions.consumer import EventQueueConsumer, event_handler
from support import queue_depth, reported_event, wait_for

QUEUE = topo.service_queue("routing")
calls: list[str] = []
gate = Gate()


class Slow:
    name = "slow"

    @event_handler("case.reported", queue=QUEUE)
    def onreported_event(self, events: list[Event]) -> None:
        calls.extend(e.event_id for e in events)
        if len(calls) == 1:
            gate.wait()  # hold the first delivery while the test breaks the connection


def _publish(amqp_uri: str, ev: Event) -> None:
    with kombu.Connection(amqp_uri) as conn:
        conn.Producer().publish(ev.to_json(), exchange=topo.EVENTS_EXCHANGE,
                                routing_key=ev.type, message_id=ev.event_id, delivery_mode=2,
                                content_type="application/json")


def test_connection_dropped_under_a_running_handler_redelivers_and_carries_on(
    run_services: Any, rabbit_config: dict[str, Any], rabbit_manager: Any
) -> None:
    calls.clear()
    global gate
    gate = Gate()
    container = run_services(Slow)["slow"]
    amqp, vhost = rabbit_config["AMQP_URI"], rabbit_config["vhost"]
    first = reported_event(1)
    _publish(amqp, first)
    wait_for(lambda: calls == [first.event_id], what="the handler holds the first event")

    # the management API lists a connection some seconds after it opened
    wait_for(lambda: get_rabbit_connections(vhost, rabbit_manager), timeout=20,
             what="the service's connections listed")
    reset_rabbit_connections(vhost, rabbit_manager)  # the broker drops every connection
    gate.send()  # the handler returns; acking on the dead channel fails
    eventlet.sleep(0.5)
    assert not container._died.ready(), "the container died of a failed ack"

    # the consumer reconnects, the message comes again and is acked this time
    wait_for(lambda: calls.count(first.event_id) == 2, timeout=20, what="redelivery")
    second = reported_event(2)
    _publish(amqp, second)
    wait_for(lambda: second.event_id in calls, timeout=20, what="the next event handled")
    wait_for(lambda: queue_depth(amqp, QUEUE) == 0, what="nothing left unacked")
    assert not container._died.ready()


class _ResetMessage:
    """A kombu message whose connection looks alive but whose socket was reset (nameko
    itself only catches py-amqp's ConnectionError, not the socket's)."""

    properties = {"message_id": "m-1"}
    channel = type("Channel", (), {"connection": object()})()

    def ack(self) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    def requeue(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_ack_or_requeue_on_a_reset_socket_is_logged_not_raised(caplog: Any) -> None:
    """What the chaos run saw: the broker went away between the handler's commit and its
    ack; the socket write raised, the worker thread died and took the container with it."""
    consumer = EventQueueConsumer()
    consumer.ack(_ResetMessage())
    consumer.requeue(_ResetMessage())
    assert [r.getMessage() for r in caplog.records] == [
        "cannot ack: the connection is gone; the broker redelivers the message",
        "cannot requeue: the connection is gone; the broker redelivers the message",
    ]
