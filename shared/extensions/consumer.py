"""``@event_handler``: a nameko entrypoint that consumes gridflow events reliably.

Unlike nameko's own ``@event_handler`` (classic queues, ack even when the handler raised):

- it consumes the service's durable quorum queue (see ``shared.amqp.topology``);
- it validates every message against the event catalogue before any handler sees it;
  a message that is not a valid event is dead-lettered with the reason, never retried;
- it hands a handler *batches* of events (up to ``GRIDFLOW_BATCH_SIZE``, waiting at most
  ``GRIDFLOW_BATCH_LINGER_MS``), so one transaction and one confirm round trip serve many;
- it acks only after the handler returned, i.e. after its transaction committed;
- when a batch fails, each event is retried on its own, so one poison event cannot hold
  back the rest; a failing event is retried with backoff through ``gridflow.retry.<n>s``
  and dead-lettered after ``GRIDFLOW_MAX_ATTEMPTS``. Infrastructure errors (database or
  broker unreachable) are retried without limit, waiting at most 30 s between two tries:
  the event is fine, the world is not, and it should carry on soon after the world does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import eventlet
import kombu
from amqp.exceptions import ConnectionError as AmqpConnectionError
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Entrypoint
from nameko.messaging import QueueConsumer
from sqlalchemy import exc as sa_exc

from shared import metrics
from shared.amqp import topology as topo
from shared.amqp.publisher import OutgoingMessage, PublishError
from shared.config import Settings, setting
from shared.events import Event, InvalidEvent, decode_event
from shared.extensions.broker import BrokerPublisher
from shared.failures import PoisonEvent, RetryLater

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    PublishError,
    ConnectionError,
    TimeoutError,
)


Decoder = Callable[[Any], Event]
DEFAULT_RECONNECT_MAX_S = 5.0  # longest wait between two attempts to reach a lost broker
# The longest retry delay for an event that failed on an infrastructure error: its retries
# do not count, and the ladder's 120 s and 600 s steps would hold it for up to ten minutes
# after the database came back.
TRANSIENT_RETRY_MAX_S = 30
# What acking on a connection that broke raises (py-amqp, or the socket itself).
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    AmqpConnectionError, OSError,
)


def decode_message(message: Any) -> Event:
    """A gridflow event from a kombu message (the default decoder)."""
    return decode_event(message.body)


class EventQueueConsumer(QueueConsumer):
    """One kombu consumer per queue; messages go to the handler registered for their type."""

    broker = BrokerPublisher()

    def __init__(self) -> None:
        super().__init__()
        self._active: dict[str, dict[str, EventHandler]] = {}  # queue -> type -> handler
        self._known: dict[str, set[str]] = {}  # every type ever registered per queue
        self._decoders: dict[str, Decoder] = {}  # queue -> how its messages become events

    @property
    def prefetch_count(self) -> int:
        return Settings.from_config(self.container.config).prefetch

    @contextmanager
    def establish_connection(self) -> Iterator[Any]:
        """kombu's, but the wait between two attempts to reach a lost broker grows 1 s at a
        time only up to ``GRIDFLOW_RECONNECT_MAX_S`` (5 s), not kombu's 2 s steps up to
        30 s: consumption resumes within seconds of the broker's return, however long it
        was away."""
        cap = float(setting(self.container.config, "GRIDFLOW_RECONNECT_MAX_S",
                            DEFAULT_RECONNECT_MAX_S))
        step = min(1.0, cap)
        with self.create_connection() as conn:
            conn.ensure_connection(
                self.on_connection_error,
                self.connect_max_retries,
                interval_start=step,
                interval_step=step,
                interval_max=cap,
            )
            yield conn

    def register_provider(self, provider: EventHandler) -> None:  # type: ignore[override]
        super().register_provider(provider)
        handlers = self._active.setdefault(provider.queue_name, {})
        for t in provider.event_types:
            if t in handlers:
                raise ValueError(f"two handlers for {t} on {provider.queue_name}")
            handlers[t] = provider
        self._known.setdefault(provider.queue_name, set()).update(provider.event_types)
        self._decoders[provider.queue_name] = provider.decoder

    def get_consumers(self, consumer_cls: Callable[..., Any], channel: Any) -> Any:
        topo.declare(channel, self.broker.departments)
        self._consumers = {}
        for queue_name in self._active:
            consumer = consumer_cls(
                queues=[kombu.Queue(queue_name, no_declare=True)],
                on_message=partial(self._on_message, queue_name),
                auto_declare=False,
            )
            consumer.qos(prefetch_count=self.prefetch_count)
            self._consumers[queue_name] = consumer
        return self._consumers.values()

    def unregister_provider(self, provider: EventHandler) -> None:  # type: ignore[override]
        """nameko signals "last provider gone" for *every* provider that stops before the
        consumers were ready (a service stopped while it starts), and the second signal
        raises; a service with several handlers could then not stop. Signal it once."""
        if not self._consumers_ready.ready():
            if not self._last_provider_unregistered.ready():
                self._last_provider_unregistered.send()
            return
        super().unregister_provider(provider)

    def _cancel_consumers_if_requested(self) -> None:
        requests, self._pending_remove_providers = self._pending_remove_providers, {}
        for provider, removed_event in requests.items():
            provider.flush()
            handlers = self._active.get(provider.queue_name, {})
            for t in provider.event_types:
                handlers.pop(t, None)
            if not handlers:
                self._active.pop(provider.queue_name, None)
                consumer = self._consumers.pop(provider.queue_name, None)
                if consumer is not None:
                    consumer.cancel()
            removed_event.send()

    # -- messages --------------------------------------------------------------------------
    def _on_message(self, queue_name: str, message: Any) -> None:
        try:
            event = self._decoders.get(queue_name, decode_message)(message)
        except InvalidEvent as exc:
            self.dead_letter(queue_name, message, str(exc))
            return
        handler = self._active.get(queue_name, {}).get(event.type)
        if handler is None:
            if event.type in self._known.get(queue_name, ()):
                self.requeue(message)  # its handler is stopping; another instance will take it
            else:
                self.dead_letter(
                    queue_name, message, f"no handler for {event.type} on {queue_name}"
                )
            return
        handler.add(event, message)

    def ack(self, message: Any) -> None:
        self._settle(self.ack_message, message, "ack")

    def requeue(self, message: Any) -> None:
        self._settle(self.requeue_message, message, "requeue")

    @staticmethod
    def _settle(how: Callable[[Any], None], message: Any, what: str) -> None:
        """Ack or requeue; if the connection it came on is gone, the broker has already
        put the message back and redelivers it (the inbox drops it if it was handled).
        Raising here would kill the container: nameko treats it as a dead worker thread."""
        try:
            how(message)
        except CONNECTION_LOST as exc:
            log.warning(
                f"cannot {what}: the connection is gone; the broker redelivers the message",
                extra={"error": repr(exc),
                       "message_id": (message.properties or {}).get("message_id")},
            )

    def _republish(
        self, message: Any, exchange: str, routing_key: str, headers: dict[str, Any]
    ) -> bool:
        props = message.properties or {}
        original = dict(message.headers or {})
        info = message.delivery_info or {}
        original.setdefault(topo.H_EXCHANGE, info.get("exchange", ""))
        original.setdefault(topo.H_ROUTING_KEY, info.get("routing_key", ""))
        original.update(headers)
        outgoing = OutgoingMessage(
            exchange=exchange,
            routing_key=routing_key,
            body=message.body if isinstance(message.body, bytes) else str(message.body).encode(),
            message_id=str(props.get("message_id") or ""),
            type=str(props.get("type") or ""),
            headers=original,
            content_type=message.content_type or "application/json",
        )
        try:
            failed = self.broker.publisher.publish([outgoing])
        except PublishError as exc:
            log.warning("cannot republish; message requeued", extra={"error": str(exc)})
            self.requeue(message)
            return False
        if failed:
            self.requeue(message)
            return False
        self.ack(message)
        return True

    def _event_label(self, queue_name: str, message: Any, event_type: str | None) -> str:
        """The event type for the metrics: one the queue knows, else ``other``."""
        known = self._known.get(queue_name, ())
        if event_type is None:
            event_type = str((message.properties or {}).get("type") or "")
        return event_type if event_type in known else metrics.OTHER_EVENT

    def dead_letter(
        self, queue_name: str, message: Any, reason: str, attempts: int | None = None,
        *, event_type: str | None = None,
    ) -> None:
        log.error(
            "dead-lettering message",
            extra={
                "queue": queue_name,
                "reason": reason,
                "message_id": (message.properties or {}).get("message_id"),
            },
        )
        service = self.container.service_name
        if self._republish(
            message,
            topo.DLX,
            queue_name,
            {
                topo.H_REASON: reason[:1000],
                topo.H_QUEUE: queue_name,
                topo.H_FAILED_AT: datetime.now(UTC).isoformat(),
                topo.H_SERVICE: service,
                **({topo.H_ATTEMPTS: attempts} if attempts is not None else {}),
            },
        ):
            metrics.dead_lettered(service, queue_name)
            metrics.events_settled(service, queue_name,
                                   [self._event_label(queue_name, message, event_type)],
                                   "dead_lettered")

    def retry(
        self, queue_name: str, message: Any, attempts: int, reason: str,
        max_delay_s: int | None = None, *, event_type: str | None = None,
    ) -> None:
        """Send ``message`` back to ``queue_name`` through the retry queue for ``attempts``,
        or the longest one not above ``max_delay_s``."""
        delay = topo.retry_delay(attempts)
        if max_delay_s is not None and delay > max_delay_s:
            delay = max(d for d in topo.RETRY_DELAYS_S if d <= max_delay_s)
        log.warning(
            "handler failed; retrying",
            extra={
                "queue": queue_name,
                "attempt": attempts,
                "retry_in_s": delay,
                "reason": reason,
                "message_id": (message.properties or {}).get("message_id"),
            },
        )
        if self._republish(
            message,
            topo.retry_exchange(delay),
            queue_name,
            {
                topo.H_ATTEMPTS: attempts,
                topo.H_REASON: reason[:1000],
            },
        ):
            metrics.events_settled(self.container.service_name, queue_name,
                                   [self._event_label(queue_name, message, event_type)],
                                   "retried")


def previous_attempts(message: Any) -> int:
    """How often the message was tried before, from gridflow's header; a header that is not
    a count (anyone can publish one) counts as none rather than killing the consumer."""
    try:
        return max(0, int((message.headers or {}).get(topo.H_ATTEMPTS, 0)))
    except (TypeError, ValueError, OverflowError):
        return 0


class EventHandler(Entrypoint):
    """Entrypoint: ``@event_handler("case.routed", ...)`` on a method taking ``list[Event]``."""

    queue_consumer = EventQueueConsumer()

    def __init__(
        self, *event_types: str, queue: str | None = None, decoder: Decoder = decode_message,
        **kwargs: Any,
    ) -> None:
        """``queue`` defaults to the service's own; ``decoder`` turns a message of that queue
        into an Event (raising InvalidEvent), by default a gridflow event."""
        self.event_types = event_types
        self._queue = queue
        self.decoder = decoder
        self._buffer: list[tuple[Event, Any]] = []
        self._timer: Any = None
        kwargs.setdefault("expected_exceptions", (PoisonEvent, RetryLater, *TRANSIENT_ERRORS))
        super().__init__(**kwargs)

    @property
    def queue_name(self) -> str:
        return self._queue or topo.service_queue(self.container.service_name)

    def setup(self) -> None:
        settings = Settings.from_config(self.container.config)
        self.batch_size = settings.batch_size
        self.linger_s = settings.batch_linger_ms / 1000
        self.max_attempts = settings.max_attempts
        self.queue_consumer.register_provider(self)

    def stop(self) -> None:
        self.queue_consumer.unregister_provider(self)
        super().stop()

    # -- batching --------------------------------------------------------------------------
    def add(self, event: Event, message: Any) -> None:
        self._buffer.append((event, message))
        if len(self._buffer) >= self.batch_size:
            self.flush()
        elif self._timer is None:
            self._timer = eventlet.spawn_after(self.linger_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._buffer = self._buffer, []
        if items:
            self._spawn(items)

    def _spawn(self, items: list[tuple[Event, Any]]) -> None:
        events = [e for e, _ in items]
        try:
            self.container.spawn_worker(
                self, (events,), {},
                handle_result=partial(self._handle_result, items, started=time.perf_counter()),
            )
        except ContainerBeingKilled:
            for _, message in items:
                self.queue_consumer.requeue(message)

    # -- outcome ---------------------------------------------------------------------------
    def _handle_result(
        self, items: list[tuple[Event, Any]], worker_ctx: Any, result: Any, exc_info: Any,
        started: float | None = None,
    ) -> tuple[Any, Any]:
        qc = self.queue_consumer
        service = self.container.service_name
        if started is not None:
            metrics.handler_ran(service, (e.type for e, _ in items),
                                time.perf_counter() - started)
        if exc_info is None:
            for _, message in items:
                qc.ack(message)
            metrics.events_settled(service, self.queue_name, (e.type for e, _ in items), "ok")
        elif len(items) > 1:
            for item in items:  # find the culprit: every event on its own
                self._spawn([item])
        else:
            self._fail(items[0][1], exc_info[1], items[0][0].type)
        return result, exc_info

    def _fail(self, message: Any, exc: BaseException, event_type: str | None = None) -> None:
        qc = self.queue_consumer
        reason = f"{type(exc).__name__}: {exc}"
        attempts = previous_attempts(message) + 1
        try:
            if isinstance(exc, PoisonEvent):
                qc.dead_letter(self.queue_name, message, reason, event_type=event_type)
            elif isinstance(exc, TRANSIENT_ERRORS):
                # without limit, but never parked longer than the outage is likely to last
                qc.retry(self.queue_name, message, attempts, reason, TRANSIENT_RETRY_MAX_S,
                         event_type=event_type)
            elif attempts >= self.max_attempts:
                qc.dead_letter(
                    self.queue_name, message, f"failed {attempts} times; last: {reason}", attempts,
                    event_type=event_type,
                )
            else:
                qc.retry(self.queue_name, message, attempts, reason, event_type=event_type)
        except CONNECTION_LOST:
            pass  # the channel is gone; the broker redelivers the message


event_handler = EventHandler.decorator
