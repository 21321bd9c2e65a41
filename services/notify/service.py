"""notify: turns domain events into deliveries on the public dispatch exchange."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nameko.dependency_providers import Config

from shared.amqp.topology import DISPATCH_EXCHANGE
from shared.config import Settings
from shared.events import CaseSummarySchema, Event, make_event
from shared.extensions.consumer import event_handler
from shared.extensions.context import ClockProvider
from shared.extensions.store import Store
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
                tx.session.merge(
                    CaseSnapshot(
                        case_id=ev.case_id,
                        summary=_SUMMARY.dump(ev.data["case"]),
                        updated_at=now,
                    )
                )
                for payload in dispatch.assignment_messages(ev.data, self.public_url, ev.case_id):
                    msg_id, rk = self._deliver(tx, ev, "case.assigned", payload, now)
                    tx.emit(
                        make_event(
                            "assignment.dispatched",
                            ev.case_id,
                            {
                                "department": payload["department"],
                                "role": payload["assignment"]["role"],
                                "routing_key": rk,
                                "message_id": msg_id,
                                "dispatched_at": now,
                            },
                            producer=self.name,
                            at=now,
                        )
                    )

    @event_handler("case.escalated")
    def on_escalated(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_escalated"):
                snapshot = tx.session.get(CaseSnapshot, ev.case_id)
                case = _SUMMARY.load(snapshot.summary) if snapshot else None
                for payload in dispatch.escalation_messages(
                    ev.data, case, self.public_url, ev.case_id
                ):
                    self._deliver(tx, ev, "case.escalated", payload, now)

    def _deliver(
        self, tx: UnitOfWork, source: Event, type_: str, payload: dict[str, Any], now: datetime
    ) -> tuple[str, str]:
        dept = payload["department"]
        msg_id = dispatch.message_id(source.event_id, dept, type_)
        rk = dispatch.routing_key(dept, type_)
        public = make_event(
            type_, source.case_id, payload, producer=self.name, at=now, event_id=msg_id, public=True
        )
        tx.emit(public, exchange=DISPATCH_EXCHANGE, routing_key=rk)
        tx.session.add(
            Delivery(
                message_id=msg_id,
                case_id=source.case_id,
                department=dept,
                channel=CHANNEL,
                event_type=type_,
                routing_key=rk,
                source_event_id=source.event_id,
                created_at=now,
            )
        )
        return msg_id, rk
