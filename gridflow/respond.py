"""``gridflow respond``: a department answers over AMQP (the reference publisher).

Publishes one message to the exchange ``gridflow.responses`` with routing key
``<department>.<action>``: persistent, ``mandatory``, with publisher confirms, and a
``message_id`` (gridflow handles a message id once, so a retry after a lost confirm is safe).
The body is the same JSON object the HTTP API takes, plus ``case_id``. gridflow validates
it; one it refuses is dead-lettered into ``gridflow.responses.dlq`` with the reason in the
``x-gridflow-reason`` header.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pika
import pika.exceptions

EXCHANGE = "gridflow.responses"


def body_for(args: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"case_id": args.case_id}
    if args.actor:
        body["actor"] = args.actor
    if args.note is not None:
        body["note"] = args.note
    if args.action in ("progress", "resolve") and args.media:
        body["media_urls"] = args.media
    if args.action == "return":
        body["reason_code"] = args.reason_code
    return body


def publish(amqp_uri: str, department: str, action: str, body: dict[str, Any],
            message_id: str) -> None:
    """Publish and wait for the broker's confirm; raises if it is not routed or confirmed."""
    params = pika.URLParameters(amqp_uri)
    with pika.BlockingConnection(params) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            EXCHANGE, f"{department}.{action}",
            json.dumps(body, ensure_ascii=False).encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                 message_id=message_id, type=f"response.{action}"),
            mandatory=True,
        )


def main(args: Any) -> int:
    if args.action == "return" and not args.reason_code:
        print("return needs --reason-code")
        return 2
    message_id = args.message_id or str(uuid.uuid4())
    body = body_for(args)
    try:
        publish(args.amqp_uri, args.department, args.action, body, message_id)
    except (pika.exceptions.AMQPError, OSError) as exc:
        print(f"not sent: {type(exc).__name__}: {exc}")
        return 1
    print(f"sent {args.department}.{args.action} for {args.case_id} (message id {message_id})")
    return 0
