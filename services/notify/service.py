"""notify: turns domain events into deliveries on the public dispatch exchange.

A thin shell over ``dispatch``: each handler picks the messages an event makes, writes
them to the outbox (exchange ``gridflow.dispatch``) and records every delivery.
"""

from __future__ import annotations

from datetime import datetime

from nameko.dependency_providers import Config

from shared.amqp.topology import DISPATCH_EXCHANGE
from shared.config import Settings
from shared.events import CaseSummarySchema, Event, make_event
from shared.extensions.consumer import event_handler
from shared.extensions.context import ClockProvider
from shared.extensions.store import Store
from shared.failures import RetryLater
from shared.unit_of_work import UnitOfWork

from . import dispatch
from .store import Base, CaseSnapshot, Delivery, Inbox, Outbox

CHANNEL = f"amqp:{DISPATCH_EXCHANGE}"
_SUMMARY = CaseSummarySchema()


class NotifyService:
    name = "notify"

    db = Store(Base.metadata, Outbox, Inbox)
    clock = ClockProvider()
    config = Config()

    @property
    def public_url(self) -> str:
        return Settings.from_config(self.config).public_url

    @event_handler("case.routed")
    def on_routed(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_routed"):
                tx.session.merge(CaseSnapshot(
                    case_id=ev.case_id, summary=_SUMMARY.dump(ev.data["case"]),
                    tier=ev.data["tier"], updated_at=now,
                ))
                msgs = dispatch.assignment_messages(ev.data, self.public_url, ev.case_id)
                self._deliver_all(tx, ev, msgs, now)

    @event_handler("assignments.added")
    def on_added(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_added"):
                snapshot = tx.session.get(CaseSnapshot, ev.case_id)
                if snapshot is None:
                    raise RetryLater(f"summons for case {ev.case_id} before its routing")
                msgs = dispatch.summons_messages(ev.data, snapshot.tier, self.public_url,
                                                 ev.case_id)
                self._deliver_all(tx, ev, msgs, now)

    @event_handler("case.tier_changed")
    def on_tier_changed(self, events: list[Event]) -> None:
        """Keep the case's tier current for the messages that carry it."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_tier_changed"):
                snapshot = tx.session.get(CaseSnapshot, ev.case_id)
                if snapshot is None:
                    raise RetryLater(f"tier change of case {ev.case_id} before its routing")
                snapshot.tier, snapshot.updated_at = ev.data["to_tier"], now

    @event_handler("case.escalated", "case.reminded")
    def on_notice(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_notice"):
                snapshot = tx.session.get(CaseSnapshot, ev.case_id)
                case = _SUMMARY.load(snapshot.summary) if snapshot else None
                if snapshot is not None and ev.type == "case.escalated":
                    snapshot.tier, snapshot.updated_at = ev.data["to_tier"], now
                field = "escalation" if ev.type == "case.escalated" else "reminder"
                msgs = dispatch.notice_messages(ev.type, field, ev.data, case, self.public_url,
                                                ev.case_id)
                self._deliver_all(tx, ev, msgs, now)

    def _deliver_all(self, tx: UnitOfWork, source: Event, msgs: list[dispatch.Outgoing],
                     now: datetime) -> None:
        for out in msgs:
            msg_id = dispatch.message_id(source.event_id, out.key, out.type)
            public = make_event(out.type, source.case_id, out.payload, producer=self.name,
                                at=now, event_id=msg_id, public=True)
            tx.emit(public, exchange=DISPATCH_EXCHANGE, routing_key=out.routing_key)
            tx.session.add(Delivery(
                message_id=msg_id, case_id=source.case_id, recipient=out.key, channel=CHANNEL,
                event_type=out.type, routing_key=out.routing_key,
                source_event_id=source.event_id, created_at=now,
            ))
            if out.type == "case.assigned":
                tx.emit(make_event("assignment.dispatched", source.case_id, {
                    "department": out.key, "role": out.payload["assignment"]["role"],
                    "routing_key": out.routing_key, "message_id": msg_id, "dispatched_at": now,
                }, producer=self.name, at=now))
