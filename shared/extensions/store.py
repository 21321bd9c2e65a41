"""The service's database: engine, tables, units of work, and the outbox relay's thread."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

from nameko.extensions import DependencyProvider
from sqlalchemy import Engine, MetaData
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import utcnow
from shared.config import Settings, setting
from shared.db import (
    DEFAULT_CONNECT_TIMEOUT_S,
    create_tables,
    is_postgres,
    make_engine,
    non_durable,
    service_database_url,
)
from shared.extensions.auth import audit_committed, pending_audit
from shared.extensions.broker import BrokerPublisher
from shared.outbox import DEFAULT_MAX_BACKOFF_S, OutboxMixin, OutboxRelay
from shared.unit_of_work import InboxMixin, UnitOfWork

log = logging.getLogger(__name__)


class StoreAccess:
    """What a worker sees: ``transaction()`` for writes, ``read()`` for queries."""

    def __init__(self, provider: Store, worker_ctx: Any = None) -> None:
        self._p = provider
        self._ctx = worker_ctx

    def transaction(self) -> UnitOfWork:
        p = self._p
        return UnitOfWork(
            p.sessions(),
            producer=p.container.service_name,
            now=utcnow(),
            outbox=p.outbox_model,
            inbox=p.inbox_model,
            after_commit=p.relay.wake,
            audit=pending_audit(self._ctx),
            audited=lambda: audit_committed(self._ctx),
        )

    def read(self) -> AbstractContextManager[Session]:
        return self._p.sessions()

    @property
    def engine(self) -> Engine:
        return self._p.engine


class Store(DependencyProvider):
    broker = BrokerPublisher()

    def __init__(
        self, metadata: MetaData, outbox_model: type[OutboxMixin], inbox_model: type[InboxMixin]
    ) -> None:
        self.metadata = metadata
        self.outbox_model = outbox_model
        self.inbox_model = inbox_model

    def setup(self) -> None:
        name = self.container.service_name
        settings = Settings.from_config(self.container.config, name)
        url = service_database_url(name, settings.database_url, settings.var_dir)
        self.engine = make_engine(
            url,
            schema=name,
            connect_timeout_s=float(
                setting(self.container.config, "GRIDFLOW_DB_CONNECT_TIMEOUT_S",
                        DEFAULT_CONNECT_TIMEOUT_S)
            ),
        )
        create_tables(self.engine, self.metadata)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.settings = settings

    def start(self) -> None:
        self.relay = OutboxRelay(
            self.sessions,
            self.outbox_model,
            self.broker.publisher,
            hold_claims=is_postgres(self.engine),
            mark_sessions=sessionmaker(non_durable(self.engine), expire_on_commit=False),
            batch_size=self.settings.relay_batch,
            poll_interval_s=self.settings.poll_interval_s,
            max_backoff_s=float(
                setting(self.container.config, "GRIDFLOW_RELAY_MAX_BACKOFF_S",
                        DEFAULT_MAX_BACKOFF_S)
            ),
        )
        self._relay_thread = self.container.spawn_managed_thread(self.relay.run, "outbox-relay")

    def stop(self) -> None:
        self.relay.stop()
        self._relay_thread.wait()
        try:
            self.relay.drain()  # events committed by the last workers leave now
        except Exception as exc:
            log.warning(
                "outbox not drained at stop; rows stay for the next start",
                extra={"error": str(exc)},
            )
        self.engine.dispose()

    def kill(self) -> None:
        relay = getattr(self, "relay", None)
        if relay is not None:
            relay.stop()

    def get_dependency(self, worker_ctx: Any) -> StoreAccess:
        return StoreAccess(self, worker_ctx)
