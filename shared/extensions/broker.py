"""The container's confirming publisher, which also declares the broker topology.

Importing this module also makes nameko's RPC responder survive a lost broker (see
``guard_rpc_replies``): every gridflow service imports it through its store.
"""

from __future__ import annotations

import logging
from typing import Any

import amqp
import kombu
from nameko.extensions import SharedExtension
from nameko.rpc import RpcConsumer

from shared.amqp import topology
from shared.amqp.publisher import ConfirmingPublisher, PublishError
from shared.config import Settings
from shared.reference import load_reference

log = logging.getLogger(__name__)


class BrokerPublisher(SharedExtension):
    """One confirming publisher per container, shared by the relay and the consumers."""

    publisher: ConfirmingPublisher

    def setup(self) -> None:
        settings = Settings.from_config(self.container.config)
        departments = sorted(load_reference(settings.data_dir).catalogue.departments)

        def declare(channel: Any) -> None:
            topology.declare(channel, departments)

        self.publisher = ConfirmingPublisher(
            settings.amqp_uri, on_connect=declare, app_id=f"gridflow.{self.container.service_name}"
        )
        self.departments = departments

    def start(self) -> None:
        try:
            self.publisher.connect()  # declare the topology before the first event, not during
        except PublishError as exc:
            log.warning(
                "broker not reachable at start; will connect on first publish",
                extra={"error": str(exc)},
            )

    def stop(self) -> None:
        self.publisher.close()

    def kill(self) -> None:
        self.publisher.close()


BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    amqp.exceptions.AMQPError,
    kombu.exceptions.KombuError,
)


def guard_rpc_replies() -> None:
    """An RPC reply that cannot be sent must not kill the service.

    nameko sends an ``@rpc`` method's reply from the worker's result handler; when the
    broker is gone by then, the publish error escapes the worker and nameko kills the whole
    container: a service answering a query when the line drops is dead for good. Guarded,
    the reply is dropped with a warning and the request is left unacked, so the broker
    hands it out again once it is back (the caller has timed out; gridflow's RPC methods
    are queries, safe to run twice). Idempotent; applies to every container in the process.
    """
    original = RpcConsumer.handle_result
    if getattr(original, "_gridflow_guarded", False):
        return

    def handle_result(self: Any, message: Any, result: Any, exc_info: Any) -> Any:
        try:
            return original(self, message, result, exc_info)
        except BROKER_ERRORS as exc:
            log.warning(
                "RPC reply not sent: the broker is unreachable; the caller will time out",
                extra={
                    "error": f"{type(exc).__name__}: {exc}",
                    "reply_to": (message.properties or {}).get("reply_to"),
                },
            )
            return result, exc_info

    handle_result._gridflow_guarded = True  # type: ignore[attr-defined]
    RpcConsumer.handle_result = handle_result  # type: ignore[method-assign]


guard_rpc_replies()
