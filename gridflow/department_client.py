"""The reference department client: consume ``dispatch.<department>`` with pika.

This is the file departmental integrators copy. It shows the whole contract:

- consume your own durable queue ``dispatch.<department>`` (never declare it: gridflow
  does, and your broker user may only read it);
- every message is JSON with ``message_id`` = the event id; drop ids you have seen
  (messages can be delivered twice, e.g. after a reconnect);
- handle the message (print it, or forward it to your own system over HTTP);
- when forwarding, sign each POST (``X-Gridflow-Signature``, HMAC-SHA256 over timestamp and
  body: ``shared/signing.py``) with ``--secret`` / ``GRIDFLOW_FORWARD_SECRET`` so your
  system can tell it from anyone else's POST (``gridflow.webhooks.verify_request``);
- ack only after handling succeeded. If your system is down, keep the message and retry
  with backoff; if it rejects the message as invalid (a 4xx), reject it so that it goes to
  ``dispatch.<department>.dlq`` for an operator, instead of blocking the queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import pika
import pika.exceptions

from shared.signing import signed_headers

RETRY_DELAYS_S = (1, 2, 5, 10, 30)


class SeenIds:
    """The last ``size`` message ids, for dropping redeliveries."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, message_id: str) -> bool:
        """Remember ``message_id``; False if it was already there."""
        if message_id in self._ids:
            self._ids.move_to_end(message_id)
            return False
        self._ids[message_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


class PermanentFailure(Exception):
    """The receiving system refused the message; retrying will not help."""


def forward(url: str, body: bytes, headers: dict[str, str], timeout: float = 10.0) -> None:
    """POST the message to ``url``. Raises PermanentFailure on 4xx, OSError otherwise."""
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            raise PermanentFailure(f"{url} answered {exc.code}") from exc
        raise OSError(f"{url} answered {exc.code}") from exc


def describe(body: dict[str, Any]) -> str:
    """One line for a human: what arrived and what to do."""
    data = body.get("data", {})
    case = data.get("case") or {}
    loc = case.get("location") or {}
    where = " / ".join(loc.get("path") or []) or loc.get("grid_code", "")
    if body.get("type") == "case.assigned":
        a = data.get("assignment", {})
        whistle = data.get("whistle") or {}
        called = f" (whistle: {whistle.get('level')})" if whistle else ""
        return (
            f"ASSIGNED {body.get('case_id')} [{a.get('role')}]{called} "
            f"{case.get('category_name', '')} @ {where}: {case.get('description', '')}"
            f" | report in by {a.get('report_in_due')}, resolve by {a.get('resolve_due')}"
        )
    if body.get("type") in ("case.escalated", "case.reminded"):
        notice = data.get("escalation") or data.get("reminder") or {}
        late = ", ".join(f"{m.get('department')} {m.get('clock')}"
                         for m in notice.get("missed") or [])
        tier = notice.get("to_tier") or notice.get("tier") or {}
        word = "ESCALATED" if body["type"] == "case.escalated" else "REMINDED"
        return (
            f"{word} {body.get('case_id')} {notice.get('reason')} ({late}): "
            f"{'now' if word == 'ESCALATED' else 'still'} at {tier.get('tier')} "
            f"{tier.get('name', '')}{_for(data)}"
        )
    if body.get("type") == "case.whistled":
        w = data.get("whistle") or {}
        by = w.get("by") or {}
        return (
            f"WHISTLE {body.get('case_id')} [{w.get('level')}] by {by.get('name')} "
            f"({by.get('tier')}): {', '.join(data.get('departments') or [])} report in"
            f"{_for(data)}"
        )
    return f"{body.get('type')} {body.get('case_id')}"


def _for(data: dict[str, Any]) -> str:
    """' | for <tier owner>' when a message is addressed to a grid node's owner."""
    tier = (data.get("recipient") or {}).get("tier") or {}
    owner = tier.get("owner") or {}
    if not tier:
        return ""
    return f" | for {tier.get('name', '')} {owner.get('role', '')} {owner.get('name', '')}".rstrip()


@dataclass
class Stats:
    received: int = 0
    handled: int = 0
    duplicates: int = 0
    rejected: int = 0


class DepartmentClient:
    def __init__(
        self,
        amqp_uri: str,
        department: str,
        *,
        queue: str | None = None,
        forward_url: str | None = None,
        forward_secrets: list[str] | None = None,
        prefetch: int = 10,
        output: TextIO = sys.stdout,
        as_json: bool = False,
        max_messages: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.amqp_uri = amqp_uri
        self.department = department
        self.queue = queue or f"dispatch.{department}"
        self.forward_url = forward_url
        self.forward_secrets = [s for s in forward_secrets or [] if s]
        self.prefetch = prefetch
        self.output = output
        self.as_json = as_json
        self.max_messages = max_messages
        self.sleep = sleep
        self.seen = SeenIds()
        self.stats = Stats()
        self._stop = False
        self._channel: Any = None

    def log(self, text: str) -> None:
        print(text, file=self.output, flush=True)

    # -- one message -----------------------------------------------------------------------
    def handle(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        self.stats.received += 1
        message_id = props.message_id or ""
        if message_id and not self.seen.add(message_id):
            self.stats.duplicates += 1
            self.log(f"duplicate {message_id} dropped")
            channel.basic_ack(method.delivery_tag)
            return
        try:
            payload = json.loads(body)
        except ValueError:
            self.log(f"message {message_id} is not JSON; rejected to {self.queue}.dlq")
            self.stats.rejected += 1
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        self.log(json.dumps(payload, ensure_ascii=False) if self.as_json else describe(payload))
        if self.forward_url and not self._forward(body, props):
            self.stats.rejected += 1
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        channel.basic_ack(method.delivery_tag)
        self.stats.handled += 1
        if self.max_messages is not None and self.stats.received >= self.max_messages:
            channel.stop_consuming()

    def _forward(self, body: bytes, props: Any) -> bool:
        """Forward until it works (True) or is refused for good (False)."""
        headers = {
            "X-Gridflow-Message-Id": props.message_id or "",
            "X-Gridflow-Type": props.type or "",
        }
        attempt = 0
        while not self._stop:
            signed = signed_headers(self.forward_secrets, body) if self.forward_secrets else {}
            try:
                forward(self.forward_url or "", body, {**headers, **signed})
                return True
            except PermanentFailure as exc:
                self.log(f"forward refused: {exc}; message rejected to {self.queue}.dlq")
                return False
            except OSError as exc:
                delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
                self.log(f"forward failed ({exc}); retrying in {delay}s, message kept")
                attempt += 1
                self._connection_sleep(delay)
        return False

    def _connection_sleep(self, seconds: float) -> None:
        """Wait while keeping the broker connection alive (heartbeats)."""
        conn = self._channel.connection if self._channel is not None else None
        if conn is not None and hasattr(conn, "sleep"):
            conn.sleep(seconds)
        else:
            self.sleep(seconds)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        delay = 1.0
        while not self._stop:
            try:
                params = pika.URLParameters(self.amqp_uri)
                params.heartbeat = 30
                with pika.BlockingConnection(params) as conn:
                    channel = conn.channel()
                    self._channel = channel
                    try:
                        channel.queue_declare(self.queue, passive=True)
                    except pika.exceptions.ChannelClosedByBroker as exc:
                        self.log(
                            f"queue {self.queue} does not exist ({exc.reply_text}); "
                            "is gridflow's notify service running, and is the department "
                            "in the catalogue?"
                        )
                        return 2
                    channel.basic_qos(prefetch_count=self.prefetch)
                    channel.basic_consume(self.queue, self.handle)
                    self.log(f"consuming {self.queue} (Ctrl-C to stop)")
                    delay = 1.0
                    channel.start_consuming()
                    if self.max_messages is not None and self.stats.received >= self.max_messages:
                        return 0
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosed) as exc:
                if self._stop:
                    break
                self.log(
                    f"broker connection lost ({type(exc).__name__}); reconnecting in {delay:.0f}s"
                )
                self.sleep(delay)
                delay = min(delay * 2, 30.0)
        return 0

    def stop(self) -> None:
        self._stop = True
        if self._channel is not None:
            with contextlib.suppress(Exception):  # the channel may already be gone
                self._channel.stop_consuming()


def forward_secrets(given: str | None) -> list[str]:
    """``--secret`` or ``GRIDFLOW_FORWARD_SECRET``, comma-separated (several while your
    system rotates: each forward is signed with all of them)."""
    raw = given or os.environ.get("GRIDFLOW_FORWARD_SECRET") or ""
    return [s.strip() for s in raw.split(",") if s.strip()]


def main(args: Any) -> int:
    client = DepartmentClient(
        args.amqp_uri,
        args.department or f"tier.{args.tier}",
        queue=f"dispatch.tier.{args.tier}" if args.tier else None,
        forward_url=args.forward,
        forward_secrets=forward_secrets(getattr(args, "secret", None)),
        prefetch=args.prefetch,
        as_json=args.json,
        max_messages=args.max_messages,
    )

    def _stop(*_: Any) -> None:
        client.stop()

    signal.signal(signal.SIGTERM, _stop)
    try:
        code = client.run()
    except KeyboardInterrupt:
        code = 0
    s = client.stats
    client.log(
        f"stopped: {s.received} received, {s.handled} handled, "
        f"{s.duplicates} duplicates dropped, {s.rejected} rejected"
    )
    return code
