"""escalation: keeps every clock in its tables and escalates on missed deadlines.

The clock is the database, not memory and not broker TTLs: a ticker (nameko's ``@timer``
only drives it) claims due clocks with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and a
fenced ``UPDATE … WHERE state = 'running'`` on both backends, so any number of instances
can tick and a restart fires, once, whatever fell due while it was down.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.events import Event, make_event
from shared.extensions.consumer import event_handler
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.store import Store
from shared.extensions.ticker import ticker
from shared.unit_of_work import UnitOfWork

from . import clocks
from .store import Base, CaseTier, Clock, Inbox, Outbox

TICK_SECONDS = 1.0
CLAIM_BATCH = 500


class EscalationService:
    name = "escalation"

    db = Store(Base.metadata, Outbox, Inbox)
    ref = Reference()
    clock = ClockProvider()

    @event_handler("case.routed")
    def on_routed(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "escalation.on_routed"):
                tier = ev.data["tier"]
                tx.session.merge(
                    CaseTier(
                        case_id=ev.case_id,
                        grid_code=ev.data["case"]["location"]["grid_code"],
                        tier=tier["tier"],
                        tier_code=tier["code"],
                        escalations=0,
                        updated_at=now,
                    )
                )
                for plan in clocks.clocks_for(ev.data["assignments"]):
                    row = _clock(tx.session, ev.case_id, plan.department, plan.kind)
                    if row is None:
                        row = Clock(case_id=ev.case_id, department=plan.department, kind=plan.kind)
                        tx.session.add(row)
                    row.role = plan.role
                    row.due_at = plan.due_at
                    row.state = clocks.state_on_arrival(row.state)

    @event_handler("assignment.acknowledged", "assignment.resolved")
    def on_stopped(self, events: list[Event]) -> None:
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "escalation.on_stopped"):
                for kind in clocks.STOPS[ev.type]:
                    row = _clock(tx.session, ev.case_id, ev.data["department"], kind)
                    if row is None:
                        row = Clock(case_id=ev.case_id, department=ev.data["department"], kind=kind)
                        tx.session.add(row)
                    if row.state != clocks.FIRED:
                        row.state = clocks.STOPPED
                    row.stopped_at = ev.data["at"]

    @ticker("GRIDFLOW_TICK_S", default=TICK_SECONDS)
    def tick(self) -> int:
        """Fire every clock that is due now; returns how many fired."""
        now = self.clock.now()
        fired = 0
        while True:
            with self.db.transaction() as tx:
                seen, claimed = self._fire_due(tx, now)
            fired += claimed
            if seen < CLAIM_BATCH:
                return fired

    def _fire_due(self, tx: UnitOfWork, now: Any) -> tuple[int, int]:
        """Claim one batch of due clocks and escalate their cases: (seen, claimed)."""
        s = tx.session
        due = s.scalars(
            select(Clock)
            .where(Clock.state == clocks.RUNNING, Clock.due_at <= now)
            .order_by(Clock.due_at)
            .limit(CLAIM_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if not due:
            return 0, 0
        claimed = set(
            s.scalars(
                update(Clock)
                .where(Clock.id.in_([c.id for c in due]), Clock.state == clocks.RUNNING)
                .values(state=clocks.FIRED, fired_at=now)
                .returning(Clock.id)
            )
        )
        by_case: dict[str, list[Clock]] = defaultdict(list)
        for c in due:
            if c.id in claimed:
                by_case[c.case_id].append(c)
        for case_id, missed in by_case.items():
            self._escalate(tx, case_id, missed, now)
        return len(due), len(claimed)

    def _escalate(self, tx: UnitOfWork, case_id: str, missed: list[Clock], now: Any) -> None:
        s = tx.session
        case = s.get(CaseTier, case_id)
        if case is None:
            raise LookupError(f"clock of case {case_id} fired but the case has no tier row")
        open_departments = s.scalars(
            select(Clock.department).where(
                Clock.case_id == case_id,
                Clock.kind == clocks.RESOLVE,
                Clock.state != clocks.STOPPED,
            )
        ).all()
        payload = clocks.escalation(
            grid=self.ref.grid,
            grid_code=case.grid_code,
            tier=case.tier,
            missed=[clocks.Missed(c.department, c.kind, c.due_at) for c in missed],
            departments_open=open_departments,
            at=now,
        )
        case.tier = payload["to_tier"]["tier"]
        case.tier_code = payload["to_tier"]["code"]
        case.escalations += 1
        case.updated_at = now
        tx.emit(make_event("case.escalated", case_id, payload, producer=self.name, at=now))


def _clock(session: Session, case_id: str, department: str, kind: str) -> Clock | None:
    return session.scalars(
        select(Clock).where(
            Clock.case_id == case_id, Clock.department == department, Clock.kind == kind
        )
    ).one_or_none()
