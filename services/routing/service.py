"""routing: consumes case.reported and case.whistled; emits case.routed and
assignments.added. A thin shell over ``rules``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from werkzeug.wrappers import Request

from shared.events import CaseSummarySchema, Event, make_event
from shared.extensions.consumer import event_handler
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.http import json_http
from shared.extensions.observability import Observed
from shared.extensions.store import Store
from shared.failures import PoisonEvent, RetryLater

from . import rules
from .store import Base, Decision, Inbox, Outbox

_SUMMARY = CaseSummarySchema()


class RoutingService(Observed):
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
                        active=[a["department"] for a in routed["assignments"]],
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
                decision = self._decision(tx, ev)
                ref = self.ref
                try:
                    added = rules.summon(
                        ev.data, case=_SUMMARY.load(decision.summary),
                        on_case=decision.active, snapshot=decision.policy,
                        grid=ref.grid, calendar=ref.calendar, at=now,
                    )
                except rules.Unroutable as exc:
                    raise PoisonEvent(str(exc)) from exc
                self._add(tx, decision, "assignments.added", added, now)

    @event_handler("assignment.requested")
    def on_requested(self, events: list[Event]) -> None:
        """协同 or manual dispatch: plan the department's assignment."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "routing.on_requested"):
                decision = self._decision(tx, ev)
                added = rules.requested(ev.data, case=_SUMMARY.load(decision.summary),
                                        snapshot=decision.policy, calendar=self.ref.calendar,
                                        at=now)
                self._add(tx, decision, "assignments.added", added, now)

    @event_handler("assignment.returned")
    def on_returned(self, events: list[Event]) -> None:
        """退单: the next candidate takes the assignment, or the tier owner dispatches."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "routing.on_returned"):
                decision = self._decision(tx, ev)
                decision.active = [d for d in decision.active if d != ev.data["department"]]
                type_, payload = rules.reroute(
                    ev.data, catalogue=self.ref.catalogue,
                    case=_SUMMARY.load(decision.summary), ever_on_case=decision.departments,
                    snapshot=decision.policy,
                    start_tier={"tier": decision.tier, "code": decision.tier_code,
                                **self._node(decision)},
                    calendar=self.ref.calendar, at=now,
                )
                self._add(tx, decision, type_, payload, now)

    @json_http("GET", "/health", public=True)
    def health(self, request: Request) -> dict[str, Any]:
        return {"service": self.name, "status": "ok"}

    def _decision(self, tx: Any, ev: Event) -> Decision:
        decision = tx.session.get(Decision, ev.case_id)
        if decision is None:  # overtook the report's routing
            raise RetryLater(f"case {ev.case_id} is not routed yet")
        return decision

    def _node(self, decision: Decision) -> dict[str, Any]:
        node = self.ref.grid.get(decision.tier_code)
        return {"name": node.name, "owner": node.owner.as_dict()} if node else {}

    def _add(self, tx: Any, decision: Decision, type_: str, payload: dict[str, Any],
             now: datetime) -> None:
        new = [a["department"] for a in payload.get("assignments", [])]
        decision.departments = [*decision.departments,
                                *(d for d in new if d not in decision.departments)]
        decision.active = [*decision.active, *(d for d in new if d not in decision.active)]
        tx.emit(make_event(type_, decision.case_id, payload, producer=self.name, at=now))
