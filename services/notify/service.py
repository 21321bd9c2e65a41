"""notify: turns domain events into deliveries — on the public dispatch exchange, and to the
reporters who follow a case (反馈: webhook and SMS).

A thin shell over ``dispatch`` (public messages), ``feedback`` (what reporters are told)
and ``outbound`` (the feedback rows and their sender). Every handler writes what it sends
in the transaction that records its event in the inbox: public messages into the outbox
(exchange ``gridflow.dispatch``) with a ``Delivery`` row each, reporter feedback as
``feedback_deliveries`` rows that the sender (``send_feedback``, a ticker) sends later.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import eventlet
from nameko.dependency_providers import Config
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from sqlalchemy import select
from werkzeug.wrappers import Request

from shared.amqp.topology import DISPATCH_EXCHANGE
from shared.config import Settings, setting
from shared.db import is_postgres
from shared.events import CaseSummarySchema, Event, make_event
from shared.extensions.consumer import event_handler
from shared.extensions.context import ClockProvider, Reference
from shared.extensions.http import json_http
from shared.extensions.observability import Observed
from shared.extensions.store import Store
from shared.extensions.ticker import ticker
from shared.failures import RetryLater
from shared.unit_of_work import UnitOfWork

from . import dispatch, outbound
from . import feedback as fb
from .channels import SmsGateway, WebhookClient, load_sms_gateway, webhook_secrets
from .store import Base, CaseSnapshot, Delivery, Inbox, Outbox

CHANNEL = f"amqp:{DISPATCH_EXCHANGE}"
_SUMMARY = CaseSummarySchema()


class ReporterChannels(DependencyProvider):
    """The reporter channels as configured: the default webhook, the SMS gateway, and how
    the sender retries.

    ``GRIDFLOW_REPORTER_WEBHOOK_URL`` (none), ``GRIDFLOW_SMS_GATEWAY`` (``log``),
    ``GRIDFLOW_FEEDBACK_MAX_ATTEMPTS`` (10), ``GRIDFLOW_WEBHOOK_TIMEOUT_S`` (10),
    ``GRIDFLOW_FEEDBACK_CONCURRENCY`` (10 sends side by side).

    Every webhook is signed (``X-Gridflow-Signature``) with each of
    ``GRIDFLOW_WEBHOOK_SECRETS`` (comma-separated: old and new side by side while receivers
    rotate), or, when that is unset, with a secret generated once and kept in
    ``<GRIDFLOW_VAR_DIR>/secrets/webhook.key`` (0600). Where the secret is comes in the
    log at start; the secret itself never does."""

    def setup(self) -> None:
        config = self.container.config
        self.default_webhook: str | None = setting(config, "GRIDFLOW_REPORTER_WEBHOOK_URL", None)
        self.sms: SmsGateway = load_sms_gateway(setting(config, "GRIDFLOW_SMS_GATEWAY", "log"))
        timeout_s = float(setting(config, "GRIDFLOW_WEBHOOK_TIMEOUT_S", 10.0))
        secrets, _ = webhook_secrets(setting(config, "GRIDFLOW_WEBHOOK_SECRETS", None),
                                     Settings.from_config(config).var_dir)
        self.webhook = WebhookClient(timeout_s, secrets)
        self.max_attempts = int(setting(config, "GRIDFLOW_FEEDBACK_MAX_ATTEMPTS",
                                        fb.MAX_ATTEMPTS))
        self.concurrency = max(1, int(setting(config, "GRIDFLOW_FEEDBACK_CONCURRENCY", 10)))
        # a claim outlives the slowest batch: every send of it timing out, in rounds
        rounds = math.ceil(outbound.CLAIM_BATCH / self.concurrency)
        self.lease = max(outbound.LEASE, timedelta(seconds=2 * timeout_s * rounds))

    def get_dependency(self, worker_ctx: Any) -> ReporterChannels:
        return self


class NotifyService(Observed):
    name = "notify"

    db = Store(Base.metadata, Outbox, Inbox)
    ref = Reference()
    clock = ClockProvider()
    config = Config()
    reporters = ReporterChannels()

    @property
    def public_url(self) -> str:
        return Settings.from_config(self.config).public_url

    # -- routing and added departments -------------------------------------------------------
    @event_handler("case.routed")
    def on_routed(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            fresh = tx.fresh(events, "notify.on_routed")
            if not fresh:
                return
            # the batch's snapshots and followers in two queries, not two per event
            case_ids = {ev.case_id for ev in fresh}
            snapshots = {s.case_id: s for s in tx.session.scalars(
                select(CaseSnapshot).where(CaseSnapshot.case_id.in_(sorted(case_ids))))}
            followers = outbound.BatchFollowers(tx.session, case_ids)
            for ev in fresh:
                self.ref.catalogue.check_assignments(ev.data["assignments"])
                fields = {"summary": _SUMMARY.dump(ev.data["case"]), "tier": ev.data["tier"],
                          "lead": dispatch.lead_of(ev.data["assignments"]), "updated_at": now}
                snapshot = snapshots.get(ev.case_id)
                if snapshot is None:
                    snapshot = snapshots[ev.case_id] = CaseSnapshot(case_id=ev.case_id, **fields)
                    tx.session.add(snapshot)
                else:
                    for attr, value in fields.items():
                        setattr(snapshot, attr, value)
                msgs = dispatch.assignment_messages(ev.data, self.public_url, ev.case_id)
                self._deliver_all(tx, ev, msgs, now)
                followers.save(ev.case_id, fb.original(
                    ev.data["case"]["reporter"], ev.data["routed_at"]), now)
                self._tell_reporters(tx, ev, snapshot, now, only=followers.of(ev.case_id))

    @event_handler("assignments.added")
    def on_added(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_added"):
                self.ref.catalogue.check_assignments(ev.data["assignments"])
                snapshot = self._snapshot(tx, ev)
                snapshot.lead = dispatch.lead_after(snapshot.lead, ev.data)
                snapshot.updated_at = now
                msgs = dispatch.added_messages(ev.data, snapshot.tier, self.public_url,
                                               ev.case_id)
                self._deliver_all(tx, ev, msgs, now)

    # -- tiers -------------------------------------------------------------------------------
    @event_handler("case.tier_changed")
    def on_tier_changed(self, events: list[Event]) -> None:
        """Keep the case's tier current for the messages that carry it."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_tier_changed"):
                snapshot = self._snapshot(tx, ev)
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

    @event_handler("case.needs_dispatch")
    def on_needs_dispatch(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_needs_dispatch"):
                msgs = dispatch.needs_dispatch_messages(ev.data, self.public_url, ev.case_id)
                self._deliver_all(tx, ev, msgs, now)

    # -- work on the case --------------------------------------------------------------------
    @event_handler("assignment.progressed")
    def on_progressed(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_progressed"):
                snapshot = self._snapshot(tx, ev)
                msgs = dispatch.progress_messages(ev.data, snapshot.lead,
                                                  _SUMMARY.load(snapshot.summary),
                                                  self.public_url, ev.case_id)
                self._deliver_all(tx, ev, msgs, now)
                self._tell_reporters(tx, ev, snapshot, now)

    @event_handler("assignment.reopened")
    def on_reopened(self, events: list[Event]) -> None:
        """The department is told its assignment is worked again (返工)."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_reopened"):
                snapshot = self._snapshot(tx, ev)
                msgs = dispatch.rework_messages(ev.data, _SUMMARY.load(snapshot.summary),
                                                self.public_url, ev.case_id)
                self._deliver_all(tx, ev, msgs, now)

    @event_handler("task.created")
    def on_task(self, events: list[Event]) -> None:
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_task"):
                msgs = dispatch.task_messages(ev.data, self.public_url, ev.case_id)
                self._deliver_all(tx, ev, msgs, now)

    @event_handler("case.resolved", "case.closed", "case.reopened")
    def on_case_changed(self, events: list[Event]) -> None:
        """What only the reporters are told: resolved, closed (rate it), reworked."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_case_changed"):
                self._tell_reporters(tx, ev, self._snapshot(tx, ev), now)

    # -- reporters who follow the case -------------------------------------------------------
    @event_handler("reporter.attached", "reporter.detached")
    def on_followers(self, events: list[Event]) -> None:
        """A duplicate's reporter follows this case (and is told so), or stops following."""
        now = self.clock.now()
        with self.db.transaction() as tx:
            for ev in tx.fresh(events, "notify.on_followers"):
                d = ev.data
                key = fb.duplicate_key(d["duplicate_case_id"])
                current = outbound.follower(tx.session, ev.case_id, key)
                if ev.type == "reporter.attached":
                    f = fb.attach(current, d["reporter"], d["report_id"],
                                  d["duplicate_case_id"], d["at"])
                    outbound.save_follower(tx.session, ev.case_id, f, now)
                    snapshot = tx.session.get(CaseSnapshot, ev.case_id)
                    self._tell_reporters(tx, ev, snapshot, now, only=[f])
                else:
                    f = fb.detach(current, d["reporter"], d["duplicate_case_id"], d["at"])
                    outbound.save_follower(tx.session, ev.case_id, f, now)

    @ticker("GRIDFLOW_FEEDBACK_TICK_S", default=1.0)
    def send_feedback(self) -> dict[str, int]:
        """Send the feedback that is due; each outcome is recorded (see ``outbound``)."""
        r = self.reporters
        sender = outbound.FeedbackSender(
            self.db.read, webhook=r.webhook, sms=r.sms, skip_locked=is_postgres(self.db.engine),
            max_attempts=r.max_attempts, lease=r.lease,
            mapper=eventlet.GreenPool(r.concurrency).imap,
        )
        report = sender.run_once(self.clock.now)
        return {"sent": report.sent, "retrying": report.retrying, "failed": report.failed,
                "lost_claims": report.lost_claims}

    @rpc
    def feedback_for(self, case_id: str) -> list[dict[str, Any]]:
        """The case's feedback messages: follower, channel, masked address, type, state,
        attempts, last error, when sent."""
        with self.db.read() as session:
            return outbound.deliveries_of(session, case_id)

    @json_http("GET", "/health", public=True)
    def health(self, request: Request) -> dict[str, Any]:
        return {"service": self.name, "status": "ok"}

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _snapshot(tx: UnitOfWork, ev: Event) -> CaseSnapshot:
        snapshot = tx.session.get(CaseSnapshot, ev.case_id)
        if snapshot is None:
            raise RetryLater(f"{ev.type} of case {ev.case_id} before its routing")
        return snapshot

    def _tell_reporters(self, tx: UnitOfWork, ev: Event, snapshot: CaseSnapshot | None,
                        now: datetime, only: list[fb.Follower] | None = None) -> None:
        ctx = fb.CaseContext(
            case_id=ev.case_id, public_url=self.public_url,
            category_name=(snapshot.summary.get("category_name", "") if snapshot else ""),
            lead=snapshot.lead if snapshot else None,
            department_names={c: d.name for c, d in self.ref.catalogue.departments.items()},
            tz=self.ref.calendar.tz,
        )
        change = fb.change_for(ev.type, ev.data, ctx, ev.occurred_at)
        if change is None:
            return
        followers = only if only is not None else outbound.followers(tx.session, ev.case_id)
        msgs = fb.messages_for(change, followers, ev.event_id, self.reporters.default_webhook)
        outbound.add_messages(tx.session, ev.case_id, ev.type, ev.event_id, msgs, now)

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
