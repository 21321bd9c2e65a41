"""escalation: owns every clock, the tiers of cases and the supervision ledger (台账).

A thin shell over ``engine`` (tables) and ``clocks`` (rules). The clock is the database,
not memory and not broker TTLs: ``@ticker`` only drives it, and any number of instances
can tick. An auditor reports clocks that should have fired and did not.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from nameko.dependency_providers import Config
from nameko.rpc import rpc
from werkzeug.wrappers import Request

from shared import metrics
from shared.config import setting
from shared.db import is_postgres
from shared.events import Event
from shared.extensions.consumer import event_handler
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.http import json_http
from shared.extensions.observability import Observed
from shared.extensions.store import Store
from shared.extensions.ticker import ticker

from .engine import Engine
from .store import Base, Inbox, Outbox

log = logging.getLogger(__name__)

CLAIM_BATCH = 500
AUDIT_MARGIN_S = 60.0


class EscalationService(Observed):
    name = "escalation"

    db = Store(Base.metadata, Outbox, Inbox)
    ref = Reference()
    clock = ClockProvider()
    config = Config()

    @property
    def engine(self) -> Engine:
        return Engine(self.ref, self.name, claim_with_skip_locked=is_postgres(self.db.engine))

    def _handle(self, events: list[Event], consumer: str, method: str,
                preload: bool = False) -> None:
        now = self.clock.now()
        engine = self.engine
        with self.db.transaction() as tx:
            fresh = tx.fresh(events, consumer)
            if preload and fresh:
                engine.preload(tx.session, (ev.case_id for ev in fresh))
            for ev in fresh:
                getattr(engine, method)(tx, ev, now)

    # -- events ----------------------------------------------------------------------------
    @event_handler("case.routed")
    def on_routed(self, events: list[Event]) -> None:
        self._handle(events, "escalation.on_routed", "on_routed", preload=True)

    @event_handler("assignments.added")
    def on_added(self, events: list[Event]) -> None:
        self._handle(events, "escalation.on_added", "on_added")

    @event_handler("assignment.acknowledged", "assignment.resolved", "assignment.returned")
    def on_stopped(self, events: list[Event]) -> None:
        self._handle(events, "escalation.on_stopped", "on_stopped")

    @event_handler("assignment.paused")
    def on_paused(self, events: list[Event]) -> None:
        self._handle(events, "escalation.on_paused", "on_paused")

    @event_handler("assignment.resumed")
    def on_resumed(self, events: list[Event]) -> None:
        self._handle(events, "escalation.on_resumed", "on_resumed")

    @event_handler("assignment.reopened")
    def on_reopened(self, events: list[Event]) -> None:
        self._handle(events, "escalation.on_reopened", "on_reopened")

    @event_handler("extension.decided")
    def on_extension(self, events: list[Event]) -> None:
        self._handle(events, "escalation.on_extension", "on_extension")

    @event_handler("case.closed")
    def on_closed(self, events: list[Event]) -> None:
        self._handle(events, "escalation.on_closed", "on_closed")

    # -- the clock -------------------------------------------------------------------------
    @ticker("GRIDFLOW_TICK_S", default=0.25)
    def tick(self) -> int:
        """Fire every clock that is due now; returns how many clocks fired."""
        now = self.clock.now()
        engine = self.engine
        fired = 0
        while True:
            with self.db.transaction() as tx:
                claimed, _moved = engine.fire_due(tx, now, CLAIM_BATCH)
            fired += claimed
            if claimed < CLAIM_BATCH:
                return fired

    @ticker("GRIDFLOW_AUDIT_S", default=30.0)
    def audit(self) -> dict[str, Any]:
        """Log clocks that are overdue by more than the margin and have not fired."""
        report = self.audit_report()
        if report["overdue_unfired"]:
            log.warning("clocks overdue and not fired", extra=report)
        return report

    def _margin(self) -> timedelta:
        return timedelta(seconds=float(setting(self.config, "GRIDFLOW_AUDIT_MARGIN_S",
                                               AUDIT_MARGIN_S)))

    # -- queries (RPC for intake, HTTP for operators and probes) ---------------------------
    @rpc
    def audit_report(self) -> dict[str, Any]:
        with self.db.read() as s:
            return self.engine.audit(s, self.clock.now(), self._margin())

    @rpc
    def ledger(self, **filters: Any) -> dict[str, Any]:
        with self.db.read() as s:
            return self.engine.ledger(s, now=self.clock.now(), **filters)

    @json_http("GET", "/health", public=True)
    def health(self, request: Request) -> tuple[int, dict[str, Any]]:
        report = self.audit_report()
        return (200 if report["status"] == "ok" else 503), {"service": self.name, **report}

    def refresh_metrics(self) -> None:
        """The outbox backlog, and how many clocks are due now and not fired yet."""
        super().refresh_metrics()
        with self.db.read() as s:
            due = self.engine.clocks_due(s, self.clock.now())
        metrics.CLOCKS_DUE.labels(self.name).set(due)
