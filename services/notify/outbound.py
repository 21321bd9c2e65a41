"""The feedback tables at work: followers, feedback rows, and the sender that empties them.

Handlers write feedback rows in the transaction that records their event in the inbox
(``add_messages``); they never call out. The sender (driven by a ticker) claims due rows
in a short transaction — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several instances
can send; on SQLite the writer's ``BEGIN IMMEDIATE`` and a fenced update serialise them —
pushing each claimed row's ``next_attempt_at`` a lease ahead. It sends outside any
transaction, then records the outcome fenced by its claim token. A sender that dies
mid-send leaves the row to be claimed again once the lease is over: at least once, and the
receiving app dedupes on ``delivery_id``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import feedback as fb
from .channels import SmsGateway, WebhookClient, send_sms
from .store import FeedbackDelivery, FollowerRow

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)  # longer than any one send may take
CLAIM_BATCH = 100

Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


# -- followers --------------------------------------------------------------------------------
def _follower(row: FollowerRow) -> fb.Follower:
    return fb.Follower(row.key, dict(row.reporter), since=row.since, until=row.until,
                       report_id=row.report_id or "", duplicate_case_id=row.duplicate_case_id)


def followers(session: Session, case_id: str) -> list[fb.Follower]:
    rows = session.scalars(select(FollowerRow).where(FollowerRow.case_id == case_id))
    return [_follower(r) for r in rows]


def follower(session: Session, case_id: str, key: str) -> fb.Follower | None:
    row = session.get(FollowerRow, (case_id, key))
    return None if row is None else _follower(row)


def save_follower(session: Session, case_id: str, f: fb.Follower, now: datetime) -> None:
    session.merge(_row(case_id, f, now))


def _row(case_id: str, f: fb.Follower, now: datetime) -> FollowerRow:
    return FollowerRow(
        case_id=case_id, key=f.key, reporter=dict(f.reporter), report_id=f.report_id,
        duplicate_case_id=f.duplicate_case_id, since=f.since, until=f.until, updated_at=now,
    )


class BatchFollowers:
    """The followers of a batch's cases, read in one query; ``save`` adds or updates one
    without reading again (``save_follower`` reads per call, and flushes the session)."""

    def __init__(self, session: Session, case_ids: Iterable[str]) -> None:
        self.session = session
        self.rows: dict[str, dict[str, FollowerRow]] = {i: {} for i in case_ids}
        for row in session.scalars(
            select(FollowerRow).where(FollowerRow.case_id.in_(sorted(self.rows)))
        ):
            self.rows[row.case_id][row.key] = row

    def save(self, case_id: str, f: fb.Follower, now: datetime) -> None:
        rows = self.rows.setdefault(case_id, {})
        new = _row(case_id, f, now)
        row = rows.get(f.key)
        if row is None:
            self.session.add(new)
            rows[f.key] = new
            return
        for attr in ("reporter", "report_id", "duplicate_case_id", "since", "until",
                     "updated_at"):
            setattr(row, attr, getattr(new, attr))

    def of(self, case_id: str) -> list[fb.Follower]:
        return [_follower(r) for r in self.rows.get(case_id, {}).values()]


# -- writing ----------------------------------------------------------------------------------
def add_messages(session: Session, case_id: str, event_type: str, source_event_id: str,
                 messages: Iterable[fb.FeedbackMessage], now: datetime) -> int:
    n = 0
    for m in messages:
        session.add(FeedbackDelivery(
            delivery_id=m.delivery_id, case_id=case_id, follower=m.follower, channel=m.channel,
            address=m.address, event_type=event_type, source_event_id=source_event_id,
            body=m.body, state=fb.PENDING, attempts=0, next_attempt_at=now, created_at=now,
        ))
        n += 1
    return n


def deliveries_of(session: Session, case_id: str) -> list[dict[str, Any]]:
    """A case's feedback messages, oldest first, fit to show (addresses masked)."""
    rows = session.scalars(select(FeedbackDelivery).where(FeedbackDelivery.case_id == case_id)
                           .order_by(FeedbackDelivery.id))
    return [{
        "delivery_id": r.delivery_id, "follower": r.follower, "channel": r.channel,
        "to": fb.mask_address(r.channel, r.address), "type": r.event_type, "state": r.state,
        "attempts": r.attempts, "last_error": r.last_error,
        "created_at": r.created_at.isoformat(),
        "sent_at": r.sent_at.isoformat() if r.sent_at else None,
        "next_attempt_at": (r.next_attempt_at.isoformat()
                            if r.state == fb.PENDING and r.next_attempt_at else None),
    } for r in rows]


# -- sending ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claimed:
    id: int
    delivery_id: str
    case_id: str
    channel: str
    address: str
    body: dict[str, Any]
    attempts: int  # counting this one
    claim: str


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    lost_claims: int = 0
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (delivery_id, state)

    @property
    def claimed(self) -> int:
        return self.sent + self.retrying + self.failed + self.lost_claims


class FeedbackSender:
    """Claims due feedback rows, sends them, records what came of it."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        *,
        webhook: WebhookClient,
        sms: SmsGateway,
        skip_locked: bool,
        max_attempts: int = fb.MAX_ATTEMPTS,
        lease: timedelta = LEASE,
        batch: int = CLAIM_BATCH,
        mapper: Mapper = map,
    ) -> None:
        self.sessions = sessions
        self.webhook = webhook
        self.sms = sms
        self.skip_locked = skip_locked
        self.max_attempts = max_attempts
        self.lease = lease
        self.batch = batch
        self.mapper = mapper  # e.g. a GreenPool's imap: sends go out side by side

    def claim(self, now: datetime) -> list[Claimed]:
        m = FeedbackDelivery
        token = uuid.uuid4().hex
        due = (select(m.id).where(m.state == fb.PENDING, m.next_attempt_at <= now)
               .order_by(m.next_attempt_at, m.id).limit(self.batch))
        with self.sessions() as session, session.begin():
            if self.skip_locked:
                due = due.with_for_update(skip_locked=True)
            ids = list(session.scalars(due))
            if not ids:
                return []
            session.execute(
                update(m)
                .where(m.id.in_(ids), m.state == fb.PENDING, m.next_attempt_at <= now)
                .values(claim=token, next_attempt_at=now + self.lease, attempts=m.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            rows = session.scalars(select(m).where(m.claim == token).order_by(m.id)).all()
            return [Claimed(r.id, r.delivery_id, r.case_id, r.channel, r.address, dict(r.body),
                            r.attempts, token) for r in rows]

    def send_one(self, c: Claimed) -> fb.Outcome:
        try:
            if c.channel == fb.WEBHOOK:
                return self.webhook.post(c.address, c.body)
            if c.channel == fb.SMS:
                return send_sms(self.sms, c.address, c.body["text"])
            return fb.Outcome(False, f"unknown channel {c.channel}", permanent=True)
        except Exception as exc:  # an adapter bug must not stop the others
            return fb.Outcome(False, f"{type(exc).__name__}: {exc}")

    def record(self, c: Claimed, outcome: fb.Outcome, now: datetime) -> str | None:
        """Store an attempt's outcome; None if the claim was lost (the lease ran out and
        another sender took the row)."""
        if c.channel == fb.SMS and c.address and c.address in outcome.error:
            # a gateway's error naming the number, in whatever form: never stored in full
            outcome = replace(outcome, error=outcome.error.replace(
                c.address, fb.mask_phone(c.address)))
        nxt = fb.after_attempt(outcome, c.attempts, now, self.max_attempts)
        m = FeedbackDelivery
        with self.sessions() as session, session.begin():
            done = session.execute(
                update(m).where(m.id == c.id, m.claim == c.claim)
                .values(state=nxt.state, next_attempt_at=nxt.next_attempt_at,
                        sent_at=nxt.sent_at, last_error=nxt.last_error, claim=None)
                .execution_options(synchronize_session=False)
            ).rowcount
        where = {"delivery_id": c.delivery_id, "case_id": c.case_id, "channel": c.channel,
                 "to": fb.mask_address(c.channel, c.address), "attempt": c.attempts}
        if not done:
            log.warning("feedback claim lost before its outcome was recorded", extra=where)
            return None
        if nxt.state == fb.SENT:
            log.info("feedback sent", extra=where)
        elif nxt.state == fb.FAILED:
            log.error("feedback given up", extra={**where, "error": nxt.last_error,
                                                  "permanent": outcome.permanent})
        else:
            log.warning("feedback failed; retrying", extra={
                **where, "error": nxt.last_error,
                "retry_at": nxt.next_attempt_at.isoformat() if nxt.next_attempt_at else None})
        return nxt.state

    def run_once(self, clock: Callable[[], datetime]) -> SendReport:
        """Claim what is due now, send it, record each outcome."""
        report = SendReport()
        claimed = self.claim(clock())
        if not claimed:
            return report

        def attempt(c: Claimed) -> tuple[Claimed, str | None]:
            outcome = self.send_one(c)
            return c, self.record(c, outcome, clock())

        for c, state in self.mapper(attempt, claimed):
            if state is None:
                report.lost_claims += 1
                continue
            report.outcomes.append((c.delivery_id, state))
            if state == fb.SENT:
                report.sent += 1
            elif state == fb.FAILED:
                report.failed += 1
            else:
                report.retrying += 1
        return report
