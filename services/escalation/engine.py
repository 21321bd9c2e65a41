"""The clock engine: the rules of ``clocks`` applied to escalation's tables.

Every method works inside one unit of work (a transaction with its outbox): it reads the
rows it needs in a few queries, lets ``clocks`` decide, writes the changes and queues the
events. No nameko here; ``service.py`` calls it.

Claiming due clocks: on PostgreSQL ``SELECT … FOR UPDATE SKIP LOCKED`` so that several
instances share the work; on SQLite a fenced ``UPDATE … WHERE state = 'running'`` inside
the writer's ``BEGIN IMMEDIATE``. Every clock update is also fenced by its version column,
so a clock changed under a transaction fails that transaction rather than firing twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.db import code_range
from shared.events import Event, make_event
from shared.failures import RetryLater
from shared.policy import step_of_tier
from shared.reference import ReferenceData
from shared.unit_of_work import UnitOfWork

from . import clocks as rules
from .store import CaseRow, Clock, SupervisionItem

log = logging.getLogger(__name__)

OPEN, CLOSED = "open", "closed"


class Engine:
    def __init__(self, ref: ReferenceData, producer: str, *, claim_with_skip_locked: bool):
        self.ref = ref
        self.producer = producer
        self.skip_locked = claim_with_skip_locked
        # a batch's cases and clocks, read by ``preload`` in two queries
        self._cases: dict[str, CaseRow] | None = None
        self._clocks: dict[str, dict[tuple[str, str], Clock]] = {}

    def preload(self, session: Session, case_ids: Iterable[str]) -> None:
        """Read the rows of a batch's cases at once, so that handling its events one by one
        reads nothing more: no query per event, and no flush of the session before each
        (the inserts of the whole batch then go out together at commit)."""
        ids = sorted(set(case_ids))
        self._cases = {c.case_id: c for c in session.scalars(
            select(CaseRow).where(CaseRow.case_id.in_(ids)))}
        self._clocks = {i: {} for i in ids}
        for c in session.scalars(select(Clock).where(Clock.case_id.in_(ids))):
            self._clocks[c.case_id][(c.department, c.kind)] = c

    def _case(self, session: Session, case_id: str) -> CaseRow | None:
        if self._cases is not None and case_id in self._clocks:
            return self._cases.get(case_id)
        return session.get(CaseRow, case_id)

    def _emit(self, tx: UnitOfWork, type_: str, case_id: str, data: dict[str, Any],
              now: datetime) -> None:
        tx.emit(make_event(type_, case_id, data, producer=self.producer, at=now))

    def _tier(self, case: CaseRow, step: int) -> dict[str, Any]:
        cell, _ = self.ref.grid.cell_for_code(case.grid_code)
        return self.ref.grid.tier_info(cell, rules.tier_of(case.policy, step))

    # -- clocks come and go ----------------------------------------------------------------
    def on_routed(self, tx: UnitOfWork, ev: Event, now: datetime) -> None:
        d = ev.data
        self.ref.catalogue.check_assignments(d["assignments"])
        snapshot = d["policy"]
        if self._case(tx.session, ev.case_id) is None:
            row = CaseRow(
                case_id=ev.case_id, grid_code=d["case"]["location"]["grid_code"], step=0,
                tier=d["tier"]["tier"], tier_code=d["tier"]["code"], escalations=0,
                policy=snapshot, updated_at=now,
            )
            tx.session.add(row)
            if self._cases is not None:
                self._cases[ev.case_id] = row
        first = snapshot["steps"][0]
        working = rules.working_units(first["report_in"], first["resolve"])
        self._start_clocks(tx.session, ev.case_id, rules.plans_for(d["assignments"], 0, working))

    def on_added(self, tx: UnitOfWork, ev: Event, now: datetime) -> None:
        """Departments a whistle summoned get clocks at the case's (possibly raised) step."""
        self.ref.catalogue.check_assignments(ev.data["assignments"])
        case = tx.session.get(CaseRow, ev.case_id)
        if case is None:
            raise RetryLater(f"assignments added to case {ev.case_id} before its routing")
        d = ev.data
        if d.get("raise_to"):
            target = step_of_tier(case.policy, d["raise_to"]["tier"])
            if target > case.step:
                self._move(tx, case, target, now, f"whistle ({d.get('level')}) by "
                           f"{(d.get('by') or {}).get('name', '')}".strip())
        for a in d["assignments"]:
            working = rules.working_units(a["report_in"], a["resolve"])
            self._start_clocks(tx.session, ev.case_id, rules.plans_for([a], case.step, working))

    def _start_clocks(self, session: Session, case_id: str, plans: Sequence[rules.ClockPlan]):
        existing = self._clocks.get(case_id)
        if existing is None:
            existing = {
                (c.department, c.kind): c
                for c in session.scalars(select(Clock).where(Clock.case_id == case_id))
            }
        for p in plans:
            row = existing.get((p.department, p.kind))
            if row is None:
                row = Clock(case_id=case_id, department=p.department, kind=p.kind)
                session.add(row)
                existing[(p.department, p.kind)] = row
            row.role = p.role
            row.due_at, row.step, row.repeats, row.working = p.due_at, p.step, 0, p.working
            row.state = rules.state_on_arrival(row.state)

    def on_stopped(self, tx: UnitOfWork, ev: Event, now: datetime) -> None:
        dept = ev.data["department"]
        rows = self._clocks_of(tx.session, ev.case_id, dept)
        for kind in rules.STOPS[ev.type]:
            row = rows.get(kind)
            if row is None:  # the stop overtook the routing: remember it
                row = Clock(case_id=ev.case_id, department=dept, kind=kind, role="")
                tx.session.add(row)
            row.state = rules.STOPPED
            row.stopped_at = ev.data["at"]
        self._close(tx, ev.case_id, dept, rules.CLOSES[ev.type], ev.type, ev.data["at"], now)

    def on_paused(self, tx: UnitOfWork, ev: Event, now: datetime) -> None:
        rows = self._clocks_of(tx.session, ev.case_id, ev.data["department"], must_exist=True)
        cal = self.ref.calendar
        for row in rows.values():
            if row.state == rules.RUNNING and row.due_at is not None:
                left = rules.remaining(row.due_at, row.working, cal, ev.data["at"])
                row.remaining_s, row.state = left.total_seconds(), rules.PAUSED
        self._rescheduled(tx, ev.case_id, ev.data["department"], rows,
                          f"paused: {ev.data['reason']}", now)

    def on_resumed(self, tx: UnitOfWork, ev: Event, now: datetime) -> None:
        rows = self._clocks_of(tx.session, ev.case_id, ev.data["department"], must_exist=True)
        for row in rows.values():
            if row.state == rules.PAUSED:
                left = timedelta(seconds=row.remaining_s or 0)
                row.due_at = rules.resumed_due(left, row.working, self.ref.calendar, ev.data["at"])
                row.remaining_s, row.state = None, rules.RUNNING
        self._rescheduled(tx, ev.case_id, ev.data["department"], rows, "resumed", now)

    def on_reopened(self, tx: UnitOfWork, ev: Event, now: datetime) -> None:
        """Rework: the assignment's clocks start the policy again from its first step."""
        case = tx.session.get(CaseRow, ev.case_id)
        rows = self._clocks_of(tx.session, ev.case_id, ev.data["department"], must_exist=True)
        if case is None:
            raise RetryLater(f"reopened assignment of unknown case {ev.case_id}")
        for kind in rules.KINDS:
            row = rows.get(kind)
            if row is None:
                continue
            row.due_at, row.working = rules.restart_plan(kind, case.policy, self.ref.calendar,
                                                         ev.data["at"])
            row.step, row.repeats, row.state, row.remaining_s = 0, 0, rules.RUNNING, None
        follow_up = self._clocks_of(tx.session, ev.case_id, rules.FOLLOW_UP_DEPARTMENT)
        for row in follow_up.values():  # a case worked again is visited after its next close
            row.state = rules.STOPPED
        tx.session.flush()
        live = tx.session.scalars(select(func.max(Clock.step)).where(
            Clock.case_id == ev.case_id, Clock.state != rules.STOPPED,
            Clock.kind != rules.FOLLOW_UP)).one() or 0
        if live < case.step:
            self._move(tx, case, live, now, f"reopened: {ev.data['reason']}")
        self._rescheduled(tx, ev.case_id, ev.data["department"], rows,
                          f"reopened: {ev.data['reason']}", now)

    def on_extension(self, tx: UnitOfWork, ev: Event, now: datetime) -> None:
        d = ev.data
        if not d["approved"]:
            return
        row = self._clocks_of(tx.session, ev.case_id, d["department"], must_exist=True).get(
            rules.RESOLVE)
        if row is None or row.state == rules.STOPPED or row.due_at is None:
            return
        if row.state == rules.PAUSED:
            left = rules.extended_remaining(timedelta(seconds=row.remaining_s or 0), row.working,
                                            d["extend_by"], self.ref.calendar, now)
            row.remaining_s = left.total_seconds()
        else:
            row.due_at = rules.extended_due(row.due_at, d["extend_by"], self.ref.calendar, now)
            row.state = rules.RUNNING
        self._close(tx, ev.case_id, d["department"], rules.CLOSES["extension.approved"],
                    "extension.approved", d["at"], now)
        rows = self._clocks_of(tx.session, ev.case_id, d["department"])
        self._rescheduled(tx, ev.case_id, d["department"], rows,
                          f"extension of {d['extend_by']} approved", now)

    def _rescheduled(self, tx: UnitOfWork, case_id: str, department: str,
                     rows: dict[str, Clock], reason: str, now: datetime) -> None:
        """Tell intake the assignment's deadlines now (None for a clock not running)."""

        def due(kind: str) -> datetime | None:
            row = rows.get(kind)
            return row.due_at if row is not None and row.state == rules.RUNNING else None

        self._emit(tx, "assignment.rescheduled", case_id, {
            "department": department, "report_in_due": due(rules.REPORT_IN),
            "resolve_due": due(rules.RESOLVE), "reason": reason, "at": now,
        }, now)

    def _clocks_of(self, session: Session, case_id: str, department: str,
                   must_exist: bool = False) -> dict[str, Clock]:
        rows = {
            c.kind: c
            for c in session.scalars(select(Clock).where(
                Clock.case_id == case_id, Clock.department == department))
        }
        if must_exist and not rows:  # the event overtook the routing
            raise RetryLater(f"no clocks yet for {department} on case {case_id}")
        return rows

    def _move(self, tx: UnitOfWork, case: CaseRow, step: int, now: datetime, reason: str):
        before = self._tier(case, case.step)
        case.step = step
        after = self._tier(case, step)
        case.tier, case.tier_code, case.updated_at = after["tier"], after["code"], now
        self._emit(tx, "case.tier_changed", case.case_id,
                   {"from_tier": before, "to_tier": after, "reason": reason, "at": now}, now)

    # -- the ledger --------------------------------------------------------------------------
    def _close(self, tx: UnitOfWork, case_id: str, department: str, kinds: Iterable[str],
               why: str, at: datetime, now: datetime) -> None:
        items = tx.session.scalars(select(SupervisionItem).where(
            SupervisionItem.case_id == case_id, SupervisionItem.department == department,
            SupervisionItem.kind.in_(list(kinds)), SupervisionItem.state == OPEN)).all()
        closed = []
        for item in items:
            item.state, item.closed_at = CLOSED, at
            item.close_reason = rules.CLOSE_REASONS[why]
            closed.append({
                "id": item.id, "department": department, "kind": item.kind,
                "due_at": item.due_at, "at": at, "reason": item.close_reason,
                "late_by_s": rules.late_by(item.due_at, at).total_seconds(),
            })
        if closed:
            self._emit(tx, "supervision.closed", case_id, {"items": closed}, now)

    # -- firing ----------------------------------------------------------------------------
    def claim_due(self, session: Session, now: datetime, limit: int) -> list[Clock]:
        """Every due clock of the cases of the first ``limit`` due clocks. A case's clocks
        that fall due together fire in one transaction, so that one missed deadline moves
        the case up once: claimed clock by clock, two instances could each take one of a
        case's clocks (or a batch limit fall between them) and each escalate the case.

        PostgreSQL: those cases are locked ``FOR UPDATE SKIP LOCKED`` (a case another
        instance is firing stays with it until it commits), then their due clocks read
        again under the lock. SQLite: one writer at a time; the clocks are fenced by their
        version."""
        due = (Clock.state == rules.RUNNING, Clock.due_at <= now)
        first = select(Clock.case_id).where(*due).order_by(Clock.due_at).limit(limit)
        case_ids = set(session.scalars(first))
        if not case_ids:
            return []
        if self.skip_locked:
            lock = select(CaseRow.case_id).with_for_update(skip_locked=True)
            locked = list(session.scalars(
                lock.where(CaseRow.case_id.in_(case_ids)).order_by(CaseRow.case_id)))
            if not locked:  # another instance fires these: take other cases with due clocks
                has_due = select(Clock.id).where(Clock.case_id == CaseRow.case_id, *due)
                locked = list(session.scalars(lock.where(has_due.exists()).limit(limit)))
            if not locked:
                return []
            return list(session.scalars(
                select(Clock).where(*due, Clock.case_id.in_(locked)).order_by(Clock.due_at)
                .with_for_update()
            ))
        table = Clock.__table__
        ids = list(session.execute(
            update(table)
            .where(table.c.case_id.in_(case_ids), table.c.state == rules.RUNNING,
                   table.c.due_at <= now)
            .values(version=table.c.version + 1)
            .returning(table.c.id)
        ).scalars())
        if not ids:
            return []
        return list(session.scalars(select(Clock).where(Clock.id.in_(ids))
                                    .order_by(Clock.due_at)))

    def on_closed(self, tx: UnitOfWork, ev: Event, now: datetime) -> None:
        """A closed case gets its follow-up clock (回访), due when the event says."""
        case = tx.session.get(CaseRow, ev.case_id)
        if case is None:
            raise RetryLater(f"case {ev.case_id} closed before escalation knew it")
        rows = self._clocks_of(tx.session, ev.case_id, rules.FOLLOW_UP_DEPARTMENT)
        row = rows.get(rules.FOLLOW_UP)
        if row is None:
            row = Clock(case_id=ev.case_id, department=rules.FOLLOW_UP_DEPARTMENT,
                        kind=rules.FOLLOW_UP, role="")
            tx.session.add(row)
        row.due_at, row.state, row.step, row.repeats = ev.data["follow_up_at"], rules.RUNNING, 0, 0
        row.working = False

    def _fire_follow_ups(self, tx: UnitOfWork, clocks: list[Clock], cases: dict[str, CaseRow],
                         now: datetime) -> None:
        for c in clocks:
            c.state, c.fired = rules.STOPPED, c.fired + 1
            case = cases.get(c.case_id)
            grid_code = case.grid_code if case else ""
            self._emit(tx, "followup.due", c.case_id,
                       {"due_at": c.due_at, "grid_code": grid_code}, now)

    def fire_due(self, tx: UnitOfWork, now: datetime, limit: int) -> tuple[int, int]:
        """Fire one batch of due clocks. Returns (clocks claimed, cases that moved up)."""
        s = tx.session
        claimed = self.claim_due(s, now, limit)
        if not claimed:
            return 0, 0
        follow_ups = [c for c in claimed if c.kind == rules.FOLLOW_UP]
        due = [c for c in claimed if c.kind != rules.FOLLOW_UP]
        if follow_ups:
            cases = {r.case_id: r for r in s.scalars(select(CaseRow).where(
                CaseRow.case_id.in_({c.case_id for c in follow_ups})))}
            self._fire_follow_ups(tx, follow_ups, cases, now)
        if not due:
            return len(claimed), 0
        case_ids = sorted({c.case_id for c in due})
        cases = {r.case_id: r for r in s.scalars(select(CaseRow).where(
            CaseRow.case_id.in_(case_ids)))}
        all_clocks: dict[str, list[Clock]] = defaultdict(list)
        for c in s.scalars(select(Clock).where(Clock.case_id.in_(case_ids))):
            all_clocks[c.case_id].append(c)
        items = {
            (i.case_id, i.department, i.kind): i
            for i in s.scalars(select(SupervisionItem).where(
                SupervisionItem.case_id.in_(case_ids), SupervisionItem.state == OPEN))
        }
        by_case: dict[str, list[Clock]] = defaultdict(list)
        for c in due:
            by_case[c.case_id].append(c)
        moved = 0
        opened: dict[str, list[tuple[SupervisionItem, dict[str, Any]]]] = {}
        for case_id in case_ids:
            case = cases.get(case_id)
            if case is None:
                raise LookupError(f"clocks of case {case_id} fired but the case is unknown")
            moved += self._fire_case(tx, case, by_case[case_id], all_clocks[case_id], items,
                                     opened, now)
        if opened:
            s.flush()  # the new ledger items' ids, once for the batch
            for case_id, new_items in opened.items():
                self._emit(tx, "supervision.opened", case_id, {"items": [{
                    "id": item.id, "department": item.department, "kind": item.kind,
                    "due_at": item.due_at, "tier": tier, "at": now,
                    "reason": rules.REASONS[item.kind],
                } for item, tier in new_items]}, now)
        return len(claimed), moved

    def _fire_case(self, tx: UnitOfWork, case: CaseRow, due: list[Clock], clocks: list[Clock],
                   items: dict[tuple[str, str, str], SupervisionItem],
                   opened_by_case: dict[str, list[tuple[SupervisionItem, dict[str, Any]]]],
                   now: datetime) -> int:
        """Fire one case's due clocks; new ledger items go to ``opened_by_case``."""
        snap, cal = case.policy, self.ref.calendar
        cell, _ = self.ref.grid.cell_for_code(case.grid_code)
        outcomes: list[tuple[Clock, rules.Outcome, datetime]] = []
        for c in due:
            if c.step < case.step:  # a clock never lags behind its case's tier
                c.step, c.repeats = case.step, 0
            missed_due = c.due_at
            o = rules.on_due(c.kind, c.step, c.repeats, snap, cal, now)
            outcomes.append((c, o, missed_due))
        new_step = rules.case_step_after(case.step, [o for _, o, _ in outcomes])
        old_step = case.step
        owner_tier = self.ref.grid.tier_info(cell, rules.tier_of(snap, new_step))  # 定人
        opened = []
        for c, o, missed_due in outcomes:
            from_tier = rules.tier_of(snap, c.step)
            c.step, c.repeats, c.working, c.fired = o.step, o.repeats, o.working, c.fired + 1
            if o.action == rules.EXHAUST:
                c.state = rules.EXHAUSTED
            else:
                c.due_at = o.due_at
            entry = rules.history_entry(o.action, at=now, from_tier=from_tier,
                                        to_tier=rules.tier_of(snap, max(o.step, new_step)),
                                        due_at=missed_due, next_due=o.due_at)
            item = items.get((case.case_id, c.department, c.kind))
            if item is None:
                item = SupervisionItem(
                    case_id=case.case_id, department=c.department, kind=c.kind, state=OPEN,
                    grid_code=case.grid_code, tier=owner_tier["tier"],
                    tier_code=owner_tier["code"], owner=owner_tier["owner"], due_at=missed_due,
                    current_due=o.due_at, opened_at=now, history=[entry],
                )
                tx.session.add(item)
                items[(case.case_id, c.department, c.kind)] = item
                opened.append((item, owner_tier))
            else:
                item.history = [*item.history, entry]
                item.tier, item.tier_code = owner_tier["tier"], owner_tier["code"]
                item.owner, item.current_due = owner_tier["owner"], o.due_at
        live = sorted({c.department for c in clocks
                       if c.state != rules.STOPPED and c.kind != rules.FOLLOW_UP})
        missed = [rules.Missed(c.department, c.kind, d, o.due_at) for c, o, d in outcomes
                  if o.action != rules.EXHAUST]
        exhausted = [rules.Missed(c.department, c.kind, d) for c, o, d in outcomes
                     if o.action == rules.EXHAUST]
        if new_step > old_step:
            case.escalations += 1
            from_tier, to_tier = self._tier(case, old_step), owner_tier
            case.step, case.tier, case.tier_code = new_step, to_tier["tier"], to_tier["code"]
            case.updated_at = now
            self._emit(tx, "case.escalated", case.case_id, {
                "reason": rules.reason_for(missed or exhausted),
                "missed": rules.missed_list(missed or exhausted),
                "from_tier": from_tier, "to_tier": to_tier, "step": new_step,
                "notify": rules.recipients(grid=self.ref.grid, cell=cell, snapshot=snap,
                                           step=new_step, departments=live),
                "escalated_at": now,
            }, now)
        else:
            late = sorted({m.department for m in missed})
            self._emit(tx, "case.reminded", case.case_id, {
                "reason": rules.reason_for(missed or exhausted)
                + ("_repeated" if missed else "_at_top_tier"),
                "missed": rules.missed_list(missed),
                "exhausted": rules.missed_list(exhausted),
                "tier": self._tier(case, old_step), "step": old_step,
                "notify": rules.recipients(grid=self.ref.grid, cell=cell, snapshot=snap,
                                           step=old_step, departments=late),
                "reminded_at": now,
            }, now)
        if opened:
            opened_by_case[case.case_id] = opened
        return int(new_step > old_step)

    # -- reading -----------------------------------------------------------------------------
    def clocks_due(self, session: Session, now: datetime) -> int:
        """How many clocks are due now and not fired yet (one count on ix_clocks_due)."""
        return session.scalar(
            select(func.count()).where(Clock.state == rules.RUNNING, Clock.due_at <= now)
        ) or 0

    def audit(self, session: Session, now: datetime, margin: timedelta) -> dict[str, Any]:
        """Clocks that should have fired more than ``margin`` ago and did not."""
        late = session.execute(
            select(func.count(), func.min(Clock.due_at))
            .where(Clock.state == rules.RUNNING, Clock.due_at < now - margin)
        ).one()
        running = session.scalar(select(func.count()).where(Clock.state == rules.RUNNING))
        count, oldest = int(late[0]), late[1]
        return {
            "status": "ok" if count == 0 else "lagging",
            "running_clocks": running or 0,
            "overdue_unfired": count,
            "oldest_overdue_due_at": oldest.isoformat() if oldest else None,
            "worst_lag_s": (now - oldest).total_seconds() if oldest else 0.0,
            "margin_s": margin.total_seconds(),
            "checked_at": now.isoformat(),
        }

    def ledger(self, session: Session, *, now: datetime, state: str | None = None,
               tier: str | None = None, grid: str | None = None,
               department: str | None = None, case_id: str | None = None,
               page: int = 1, per_page: int = 50) -> dict[str, Any]:
        q = select(SupervisionItem)
        if state:
            q = q.where(SupervisionItem.state == state)
        if tier:
            q = q.where(SupervisionItem.tier == tier)
        if grid:  # a subtree: a range of codes (ix_supervision_grid)
            q = q.where(*code_range(SupervisionItem.grid_code, grid))
        if department:
            q = q.where(SupervisionItem.department == department)
        if case_id:
            q = q.where(SupervisionItem.case_id == case_id)
        total = session.scalar(q.with_only_columns(func.count()).order_by(None))
        rows = session.scalars(
            q.order_by(SupervisionItem.opened_at.desc(), SupervisionItem.id.desc())
            .limit(per_page).offset((page - 1) * per_page)
        ).all()
        return {"items": [ledger_view(i, now) for i in rows], "page": page,
                "per_page": per_page, "total": total or 0}


def ledger_view(item: SupervisionItem, now: datetime) -> dict[str, Any]:
    until = item.closed_at or now
    return {
        "id": item.id,
        "case_id": item.case_id,
        "department": item.department,
        "kind": item.kind,
        "state": item.state,
        "grid_code": item.grid_code,
        "tier": item.tier,
        "tier_code": item.tier_code,
        "owner": item.owner,
        "due_at": item.due_at.isoformat(),
        "current_due": item.current_due.isoformat() if item.current_due else None,
        "opened_at": item.opened_at.isoformat(),
        "closed_at": item.closed_at.isoformat() if item.closed_at else None,
        "close_reason": item.close_reason,
        "late_by_s": rules.late_by(item.due_at, until).total_seconds(),
        "history": item.history,
    }
