"""The departments' side of the chaos run: a pika consumer on every public queue."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from gridflow.department_client import SeenIds
from shared.events import InvalidEvent, decode_event


@dataclass
class Received:
    queue: str
    message_id: str
    type: str
    case_id: str
    department: str
    role: str


class DepartmentSide:
    """A pika consumer on every public queue, as the departments' and tiers' systems
    would run: dedup by message_id, validate, reject what is invalid (it goes to the
    queue's DLQ), ack the rest. Reconnects on its own."""

    def __init__(self, amqp_uri: str, queues: list[str]) -> None:
        self.amqp_uri, self.queues = amqp_uri, queues
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.redelivered = 0  # the same message_id again (dropped by the dedup)
        self.rejected: list[tuple[str, str]] = []  # (queue, message_id)
        self.reconnects = 0
        self._seen = SeenIds(size=10_000_000)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._consume, args=(q,), daemon=True)
                         for q in queues]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _consume(self, queue: str) -> None:
        while not self._stop.is_set():
            try:
                conn = pika.BlockingConnection(pika.URLParameters(self.amqp_uri))
            except pika.exceptions.AMQPError:
                time.sleep(0.5)
                continue
            try:
                channel = conn.channel()
                channel.basic_qos(prefetch_count=200)
                for method, props, body in channel.consume(queue, inactivity_timeout=0.5):
                    if self._stop.is_set():
                        break
                    if method is None:
                        continue
                    if self._handle(queue, props, body):
                        channel.basic_ack(method.delivery_tag)
                    else:
                        channel.basic_reject(method.delivery_tag, requeue=False)
            except pika.exceptions.AMQPError:
                with self.lock:
                    self.reconnects += 1
                time.sleep(0.5)
            finally:
                if conn.is_open:
                    with contextlib.suppress(pika.exceptions.AMQPError):
                        conn.close()

    def _handle(self, queue: str, props: Any, body: bytes) -> bool:
        message_id = props.message_id or ""
        with self.lock:
            if message_id and not self._seen.add(message_id):
                self.redelivered += 1
                return True
        try:
            event = decode_event(body, public=True)
            data = event.data
            own = queue.removeprefix("dispatch.")
            if own.startswith("tier."):
                if data.get("recipient", {}).get("tier") != own.removeprefix("tier."):
                    raise InvalidEvent("for another tier")
            elif data.get("department") not in (None, own):
                raise InvalidEvent(f"for department {data.get('department')!r}, not {own!r}")
        except InvalidEvent:
            with self.lock:
                self.rejected.append((queue, message_id))
            return False
        role = (data.get("assignment") or {}).get("role", "")
        with self.lock:
            self.received.append(Received(queue, message_id, event.type, event.case_id,
                                          data.get("department") or "", role))
        return True

    def assigned(self) -> dict[tuple[str, str, str], set[str]]:
        """(case, department, role) → the message ids that assigned it."""
        out: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        with self.lock:
            for r in self.received:
                if r.type == "case.assigned" and not r.queue.startswith("dispatch.tier."):
                    out[(r.case_id, r.department, r.role)].add(r.message_id)
        return out
