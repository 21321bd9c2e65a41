"""routing: consumes case.reported, emits case.routed. A thin shell over ``rules``."""

from __future__ import annotations

from shared.events import Event, make_event
from shared.extensions.consumer import PoisonEvent, event_handler
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.store import Store

from . import rules
from .store import Base, Decision, Inbox, Outbox


class RoutingService:
    name = "routing"

    db = Store(Base.metadata, Outbox, Inbox)
    ref = Reference()
    clock = ClockProvider()

    @event_handler("case.reported")
    def on_reported(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "routing.on_reported"):
                try:
                    routed = rules.route(
                        ev.data["case"],
                        catalogue=self.ref.catalogue,
                        grid=self.ref.grid,
                        calendar=self.ref.calendar,
                        at=now,
                    )
                except rules.Unroutable as exc:
                    raise PoisonEvent(str(exc)) from exc
                tx.session.add(
                    Decision(
                        case_id=ev.case_id,
                        category=ev.data["case"]["category"],
                        tier=routed["tier"]["tier"],
                        tier_code=routed["tier"]["code"],
                        departments=[a["department"] for a in routed["assignments"]],
                        catalogue_version=routed["catalogue_version"],
                        routed_at=now,
                    )
                )
                tx.emit(make_event("case.routed", ev.case_id, routed, producer=self.name, at=now))
