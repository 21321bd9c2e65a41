"""The monitor's reads and writes of its own tables (the SQL side of ``deadletters``,
``instances`` and the audit log)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import deadletters as dl
from .instances import Instance
from .store import AuditEntry, DeadLetterRow, InstanceRow, Operator


# -- operators -----------------------------------------------------------------------------
def seed_operators(session: Session, users: dict[str, str], now: datetime,
                   hash_password: Any) -> list[str]:
    """Create the configured operators that do not exist yet; returns their names."""
    existing = set(session.scalars(select(Operator.name)))
    created = [n for n in users if n not in existing]
    session.add_all(Operator(name=n, password_hash=hash_password(users[n]), created_at=now)
                    for n in created)
    return created


def password_hash(session: Session, name: str) -> str | None:
    row = session.get(Operator, name)
    return row.password_hash if row else None


def audit(session: Session, *, at: datetime, operator: str, action: str, target: str,
          detail: dict[str, Any], remote_addr: str) -> None:
    session.add(AuditEntry(at=at, operator=operator, action=action, target=target[:200],
                           detail=detail, remote_addr=remote_addr[:64]))


def audit_log(session: Session, limit: int, offset: int = 0) -> dict[str, Any]:
    rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())
                           .limit(limit).offset(offset)).all()
    return {
        "total": session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
        "items": [{"id": r.id, "at": r.at.isoformat(), "operator": r.operator,
                   "action": r.action, "target": r.target, "detail": r.detail,
                   "remote_addr": r.remote_addr} for r in rows],
    }


# -- dead letters --------------------------------------------------------------------------
def collect(session: Session, letters: Iterable[dl.DeadLetter], now: datetime) -> int:
    """Store the letters not stored yet (a message collected twice is stored once)."""
    letters = {d.key: d for d in letters}
    if not letters:
        return 0
    known = set(session.scalars(select(DeadLetterRow.key)
                                .where(DeadLetterRow.key.in_(list(letters)))))
    new = [d for k, d in letters.items() if k not in known]
    session.add_all(
        DeadLetterRow(
            key=d.key, dlq=d.dlq, queue=d.queue, exchange=d.exchange,
            routing_key=d.routing_key, reason=d.reason, service=d.service,
            first_death_at=d.first_death_at, collected_at=now, message_id=d.message_id,
            type=d.type, content_type=d.content_type, headers=d.headers, body=d.body,
            state=dl.PARKED, note="",
        )
        for d in new
    )
    return len(new)


def letter_view(r: DeadLetterRow, *, full: bool = False) -> dict[str, Any]:
    view = {
        "id": r.id, "dlq": r.dlq, "queue": r.queue, "exchange": r.exchange,
        "routing_key": r.routing_key, "reason": r.reason, "service": r.service,
        "first_death_at": r.first_death_at.isoformat() if r.first_death_at else None,
        "collected_at": r.collected_at.isoformat(), "message_id": r.message_id,
        "type": r.type, "state": r.state,
        "decided_at": r.decided_at.isoformat() if r.decided_at else None,
        "decided_by": r.decided_by, "note": r.note,
        "preview": dl.payload_preview(r.body),
    }
    if full:
        view.update(headers=r.headers, payload=r.body, content_type=r.content_type)
    else:
        view["payload"] = r.body[:2000]
    return view


def _filtered(state: str | None, queue: str | None) -> Any:
    q = select(DeadLetterRow)
    if state:
        q = q.where(DeadLetterRow.state == state)
    if queue:
        q = q.where(DeadLetterRow.queue == queue)
    return q


def letters(session: Session, *, state: str | None, queue: str | None, limit: int,
            offset: int) -> dict[str, Any]:
    q = _filtered(state, queue)
    total = session.scalar(select(func.count()).select_from(q.order_by(None).subquery()))
    rows = session.scalars(q.order_by(DeadLetterRow.id.desc()).limit(limit)
                           .offset(offset)).all()
    by_state = dict(session.execute(select(DeadLetterRow.state, func.count())
                                    .group_by(DeadLetterRow.state)).all())
    by_queue = dict(session.execute(select(DeadLetterRow.queue, func.count())
                                    .where(DeadLetterRow.state == dl.PARKED)
                                    .group_by(DeadLetterRow.queue)).all())
    return {"total": total or 0, "items": [letter_view(r) for r in rows],
            "by_state": {s: by_state.get(s, 0) for s in dl.STATES},
            "parked_by_queue": by_queue}


def letter(session: Session, letter_id: int) -> DeadLetterRow | None:
    return session.get(DeadLetterRow, letter_id)


def parked(session: Session, ids: list[int] | None, queue: str | None,
           limit: int, skip: Iterable[int] = (),
           within: Iterable[str] | None = None) -> list[DeadLetterRow]:
    """Parked letters by id (or all of them, optionally of one queue, and only of the
    queues ``within`` when given), but those in ``skip``, locked for a decision where the
    database can."""
    q = _filtered(dl.PARKED, queue)
    if within is not None:
        q = q.where(DeadLetterRow.queue.in_(list(within)))
    if ids is not None:
        q = q.where(DeadLetterRow.id.in_(ids))
    if skip := list(skip):
        q = q.where(DeadLetterRow.id.not_in(skip))
    return list(session.scalars(q.order_by(DeadLetterRow.id).limit(limit)
                                .with_for_update()).all())


def decide(session: Session, row: DeadLetterRow, state: str, *, by: str, at: datetime,
           note: str, remote_addr: str) -> None:
    """An operator's decision on a parked letter, and its entry in the audit log."""
    row.state, row.decided_by, row.decided_at, row.note = state, by, at, note
    detail = {"queue": row.queue, "message_id": row.message_id, **({"reason": note} if note
                                                                    else {})}
    audit(session, at=at, operator=by, action={dl.REPLAYED: "replay",
                                               dl.DISCARDED: "discard"}[state],
          target=f"dead_letter:{row.id}", detail=detail, remote_addr=remote_addr)


def queues_of(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """The queue each of these letters died in."""
    return dict(session.execute(select(DeadLetterRow.id, DeadLetterRow.queue)
                                .where(DeadLetterRow.id.in_(list(ids)))).tuples().all())


def parked_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(DeadLetterRow)
                          .where(DeadLetterRow.state == dl.PARKED)) or 0


# -- instances -----------------------------------------------------------------------------
def record_beats(session: Session, beats: Iterable[dict[str, Any]]) -> int:
    """Keep each instance's latest beat."""
    latest: dict[str, dict[str, Any]] = {}
    for b in beats:
        if b["instance"] not in latest or b["sent_at"] >= latest[b["instance"]]["sent_at"]:
            latest[b["instance"]] = b
    for b in latest.values():
        row = session.get(InstanceRow, b["instance"])
        if row is None:
            row = InstanceRow(instance=b["instance"])
            session.add(row)
        elif row.last_seen > b["sent_at"]:
            continue
        row.service, row.host, row.pid, row.version = b["service"], b["host"], b["pid"], \
            b["version"]
        row.started_at, row.last_seen = b["started_at"], b["sent_at"]
        row.interval_s, row.state = b["interval_s"], b["state"]
    return len(latest)


def instances(session: Session) -> list[Instance]:
    return [
        Instance(instance=r.instance, service=r.service, host=r.host, pid=r.pid,
                 version=r.version, started_at=r.started_at, last_seen=r.last_seen,
                 interval_s=r.interval_s, state=r.state)
        for r in session.scalars(select(InstanceRow))
    ]
