"""The container's confirming publisher, which also declares the broker topology."""

from __future__ import annotations

from typing import Any

from nameko.extensions import SharedExtension

from shared.amqp import topology
from shared.amqp.publisher import ConfirmingPublisher
from shared.config import Settings
from shared.reference import load_reference


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

    def stop(self) -> None:
        self.publisher.close()

    def kill(self) -> None:
        self.publisher.close()
