"""routing: consumes case.reported and case.whistled; emits case.routed and
assignments.added. A thin shell over ``rules``."""

from __future__ import annotations

from shared.events import CaseSummarySchema, Event, make_event
from shared.extensions.consumer import event_handler
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.store import Store
from shared.failures import PoisonEvent, RetryLater

from . import rules
from .store import Base, Decision, Inbox, Outbox

_SUMMARY = CaseSummarySchema()


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
                    routed = rules.route_with(self.ref, ev.data["case"], now)
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
                        policy=routed["policy"],
                        summary=_SUMMARY.dump(ev.data["case"]),
                        routed_at=now,
                    )
                )
                tx.emit(make_event("case.routed", ev.case_id, routed, producer=self.name, at=now))

    @event_handler("case.whistled")
    def on_whistled(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "routing.on_whistled"):
                decision = tx.session.get(Decision, ev.case_id)
                if decision is None:  # the whistle overtook the report's routing
                    raise RetryLater(f"case {ev.case_id} is not routed yet")
                ref = self.ref
                try:
                    added = rules.summon(
                        ev.data, case=_SUMMARY.load(decision.summary),
                        on_case=decision.departments, snapshot=decision.policy,
                        grid=ref.grid, calendar=ref.calendar, at=now,
                    )
                except rules.Unroutable as exc:
                    raise PoisonEvent(str(exc)) from exc
                decision.departments = [
                    *decision.departments, *(a["department"] for a in added["assignments"])
                ]
                tx.emit(make_event("assignments.added", ev.case_id, added, producer=self.name,
                                   at=now))
