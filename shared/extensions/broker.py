"""The container's confirming publisher, which also declares the broker topology."""

from __future__ import annotations

import logging
from typing import Any

from nameko.extensions import SharedExtension

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
