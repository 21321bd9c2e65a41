"""``Heartbeat``: a service process tells the operators' monitor it is alive.

Once the container starts, a managed green thread publishes a heartbeat every
``GRIDFLOW_HEARTBEAT_S`` seconds (2.0) to the topic exchange ``gridflow.heartbeats`` with
routing key ``<service>.<instance>``: a JSON body per ``shared.events.HeartbeatSchema``,
``content_type`` application/json, ``type`` ``service.heartbeat``, a new ``message_id`` each
time, transient (delivery mode 1), no publisher confirm: a lost beat is replaced by the next.
When the container stops, one last beat says ``stopping`` (best effort, within
``STOP_TIMEOUT_S``), so the monitor shows the instance down at once.

It never crashes or blocks the service: it has its own connection (not the container's
publisher, whose confirms it would wait behind), every beat is bounded by a timeout, and a
broker that is away is logged once per outage and tried again at the next beat. On
connecting it declares the heartbeat exchange and queue as ``topology.declare`` does
(idempotent); a broker that holds them with other arguments is left as it is.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import amqp
import eventlet
import kombu
from nameko.extensions import DependencyProvider

import gridflow
from shared.amqp import topology
from shared.config import Settings, setting
from shared.events import HEARTBEAT_TYPE, heartbeat_body
from shared.extensions.broker import BROKER_ERRORS

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0
STOP_TIMEOUT_S = 2.0  # the longest a container's stop waits for the last beat
MAX_BEAT_TIMEOUT_S = 5.0  # the longest one beat (connect, declare, publish) may take


class _BeatTimeout(Exception):
    """One beat took longer than its time."""


class Heartbeat(DependencyProvider):
    """Add ``heartbeat = Heartbeat()`` to a service class (``Observed`` does)."""

    def setup(self) -> None:
        config = self.container.config
        self.service = self.container.service_name
        self.interval_s = float(setting(config, "GRIDFLOW_HEARTBEAT_S", DEFAULT_INTERVAL_S))
        self.amqp_uri = Settings.from_config(config).amqp_uri
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.instance = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.routing_key = topology.heartbeat_routing_key(self.service, self.instance)
        self.version = gridflow.__version__
        self.started_at = datetime.now(UTC)
        self.beats = 0  # heartbeats handed to the broker (the tests read it)
        self._conn: kombu.Connection | None = None
        self._channel: Any = None
        self._outage = False
        self._stopping = threading.Event()  # green under eventlet's monkey patch
        self._killed = False
        self._thread: Any = None

    def start(self) -> None:
        self.started_at = datetime.now(UTC)
        self._stopping.clear()
        self._thread = self.container.spawn_managed_thread(self._run, identifier="heartbeat")

    def stop(self) -> None:
        """Ask the thread for its last beat ("stopping") and wait for it, a short time."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        with eventlet.Timeout(STOP_TIMEOUT_S + 1.0, False):
            try:
                thread.wait()
            except Exception:  # it logged what went wrong; the container stops anyway
                log.debug("heartbeat thread ended with an error", exc_info=True)
            return
        log.warning("heartbeat thread did not stop in time; killed")
        thread.kill()
        self._drop()

    def kill(self) -> None:
        """No last beat, no goodbye to the broker: the monitor sees the missed beats."""
        self._killed = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.kill()
        self._drop()

    def get_dependency(self, worker_ctx: Any) -> Heartbeat:
        return self

    # -- the thread ------------------------------------------------------------------------
    @property
    def _beat_timeout_s(self) -> float:
        return min(MAX_BEAT_TIMEOUT_S, max(1.0, self.interval_s))

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self.beat("up", self._beat_timeout_s)
                self._stopping.wait(self.interval_s)
            self.beat("stopping", STOP_TIMEOUT_S)
        finally:
            self._drop(polite=not self._killed)

    def beat(self, state: str, timeout_s: float) -> bool:
        """Publish one heartbeat; True when it was handed to the broker. Never raises."""
        try:
            body = heartbeat_body(
                service=self.service, instance=self.instance, host=self.host, pid=self.pid,
                version=self.version, started_at=self.started_at, sent_at=datetime.now(UTC),
                interval_s=self.interval_s, state=state,
            )
            with eventlet.Timeout(timeout_s, _BeatTimeout):
                self._publish(body)
        except (*BROKER_ERRORS, _BeatTimeout) as exc:
            self._drop()
            if not self._outage:
                self._outage = True
                log.warning(
                    "heartbeat not sent: the broker is unreachable; trying at every beat",
                    extra={"error": f"{type(exc).__name__}: {exc}", "service": self.service,
                           "instance": self.instance},
                )
            return False
        except Exception:  # a heartbeat must never take the service down
            self._drop()
            log.exception("heartbeat failed", extra={"instance": self.instance})
            return False
        self.beats += 1
        if self._outage:
            self._outage = False
            log.info("heartbeats sent again", extra={"instance": self.instance})
        return True

    def _publish(self, body: bytes) -> None:
        if self._conn is None or not self._conn.connected or self._channel is None:
            self._connect()
        self._channel.basic_publish(
            amqp.Message(
                body,
                content_type="application/json",
                delivery_mode=1,
                message_id=str(uuid.uuid4()),
                type=HEARTBEAT_TYPE,
                app_id=f"gridflow.{self.service}",
            ),
            exchange=topology.HEARTBEATS_EXCHANGE,
            routing_key=self.routing_key,
        )

    def _connect(self) -> None:
        self._drop()
        conn = kombu.Connection(self.amqp_uri, heartbeat=0,
                                connect_timeout=self._beat_timeout_s)
        self._conn = conn
        conn.connect()
        channel = conn.channel()
        try:
            topology.declare_heartbeats(channel)
        except amqp.exceptions.ChannelError as exc:
            # declared with other arguments (PRECONDITION_FAILED closed the channel): publish
            # to the exchange as it is, if there is one
            log.warning("heartbeat exchange or queue not declared; using them as they are",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
            channel = conn.channel()
            channel.exchange_declare(topology.HEARTBEATS_EXCHANGE, "topic", passive=True)
        self._channel = channel

    def _drop(self, polite: bool = False) -> None:
        """Forget the connection: closed properly (``polite``, bounded) or just let go."""
        conn, self._conn, self._channel = self._conn, None, None
        if conn is None:
            return
        try:
            if polite:
                with eventlet.Timeout(1.0, _BeatTimeout):
                    conn.release()
            else:
                conn.collect()
        except (Exception, eventlet.Timeout):  # gone already; nothing else to do
            log.debug("heartbeat connection not closed cleanly", exc_info=True)
