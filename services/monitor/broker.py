"""The monitor's view into RabbitMQ: queue figures (management API, or passive declares
when the plugin is off), taking messages off queues to collect them, and publishing
replays with confirms."""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

import amqp
import kombu
from nameko.extensions import DependencyProvider

from shared.amqp.publisher import OutgoingMessage, PublishError
from shared.config import Settings, setting
from shared.extensions.broker import BROKER_ERRORS, BrokerPublisher

from .queues import QueueStatus, from_declare, from_management

log = logging.getLogger(__name__)

MANAGEMENT_TIMEOUT_S = 3.0
QUEUE_COLUMNS = ",".join([
    "name", "messages", "messages_ready", "messages_unacknowledged", "consumers",
    "message_stats.publish_details.rate", "message_stats.deliver_get_details.rate",
])


class ManagementApi:
    """RabbitMQ's HTTP management API, with the broker user's credentials."""

    def __init__(self, amqp_uri: str, url: str | None = None) -> None:
        # a failover list (``amqp://a/vh;amqp://b/vh``, as kombu takes it): the first node
        parsed = urllib.parse.urlparse(amqp_uri.split(";", 1)[0])
        self.url = (url or f"http://{parsed.hostname or '127.0.0.1'}:15672").rstrip("/")
        self.vhost = urllib.parse.unquote(parsed.path[1:]) if parsed.path[1:] else "/"
        user = urllib.parse.unquote(parsed.username or "guest")
        password = urllib.parse.unquote(parsed.password or "guest")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def queues(self) -> list[QueueStatus]:
        """Every queue of the vhost; raises OSError when the plugin does not answer."""
        vhost = urllib.parse.quote(self.vhost, safe="")
        request = urllib.request.Request(
            f"{self.url}/api/queues/{vhost}?columns={QUEUE_COLUMNS}",
            headers={"Authorization": self._auth},
        )
        with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT_S) as resp:
            rows = json.loads(resp.read())
        return [from_management(r) for r in rows]


class Taken:
    """Messages taken off a queue, to be acked once what was made of them is committed."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages

    def ack(self) -> None:
        for m in self.messages:
            m.ack()

    def give_back(self) -> None:
        """Return them to their queue now (what was made of them was not committed):
        held unacked on a channel that stays open, they would wait there until it closes."""
        for m in self.messages:
            try:
                m.requeue()
            except BROKER_ERRORS:  # the channel is gone: the broker has them back already
                break


class BrokerAdmin:
    """One connection, used by one greenthread at a time."""

    def __init__(self, amqp_uri: str, publisher: Any, management_url: str | None) -> None:
        self.amqp_uri = amqp_uri
        self.publisher = publisher
        self.management = ManagementApi(amqp_uri, management_url)
        self._lock = threading.Lock()
        self._conn: kombu.Connection | None = None
        self.source = "management API"

    def _connection(self) -> kombu.Connection:
        if self._conn is None or not self._conn.connected:
            self.close()
            self._conn = kombu.Connection(self.amqp_uri, heartbeat=0, connect_timeout=5)
            self._conn.connect()
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # already gone
                log.debug("monitor broker connection close failed", exc_info=True)

    def queue_statuses(self, expected: Iterable[str]) -> tuple[list[QueueStatus], str]:
        """Figures for every gridflow queue, and where they came from."""
        expected = list(expected)
        try:
            rows = self.management.queues()
        except (OSError, ValueError) as exc:
            if self.source != "passive declares":
                log.warning("management API unavailable; using passive declares",
                            extra={"error": str(exc)})
            self.source = "passive declares"
            return self._declared(expected), self.source
        self.source = "management API"
        wanted = set(expected)
        return [r for r in rows if r.name in wanted or r.name.startswith(
            ("gridflow.", "dispatch."))], self.source

    def _declared(self, names: list[str]) -> list[QueueStatus]:
        out = []
        with self._lock:
            try:
                conn = self._connection()
                channel = conn.channel()
                for name in names:
                    try:
                        _, messages, consumers = channel.queue_declare(name, passive=True)
                    except amqp.exceptions.NotFound:
                        channel = conn.channel()  # the broker closed the one that asked
                        continue
                    out.append(from_declare(name, messages, consumers))
                channel.close()
            except BROKER_ERRORS:
                self.close()
                raise
        return out

    def take(self, queue: str, limit: int) -> Taken:
        """Up to ``limit`` messages of ``queue``, unacked."""
        with self._lock:
            try:
                q = kombu.Queue(queue, no_declare=True, channel=self._connection().default_channel)
                messages = []
                for _ in range(limit):
                    m = q.get(no_ack=False)
                    if m is None:
                        break
                    messages.append(m)
                return Taken(messages)
            except BROKER_ERRORS:
                self.close()
                raise

    def publish(self, messages: list[OutgoingMessage]) -> dict[int, str]:
        """Publish with pipelined confirms; what the broker did not take, by index."""
        try:
            return self.publisher.publish(messages)
        except PublishError as exc:
            return {i: str(exc) for i in range(len(messages))}


class Broker(DependencyProvider):
    publisher = BrokerPublisher()

    def setup(self) -> None:
        config = self.container.config
        self.admin = BrokerAdmin(
            Settings.from_config(config).amqp_uri,
            None,
            setting(config, "GRIDFLOW_RABBITMQ_MANAGEMENT_URL", None),
        )

    def start(self) -> None:
        self.admin.publisher = self.publisher.publisher

    def stop(self) -> None:
        self.admin.close()

    def get_dependency(self, worker_ctx: Any) -> BrokerAdmin:
        return self.admin
