"""Reporter feedback (反馈): what the people who reported a case are told, and how.

Pure domain code: no broker, no database, no HTTP.

*Followers* are who hears about a case: its original reporter (from ``case.routed``) and
the reporters of duplicate reports attached to it (``reporter.attached``, until
``reporter.detached``). A *change* is one thing a follower should know, with a short
Chinese status note and the public status (Open311's ``open`` / ``closed``):

==========================  ===========================================================
``case.routed``             受理: accepted, which department leads
``reporter.attached``       受理: the duplicate report was merged into this case
``assignment.progressed``   进展: a department's progress note
``case.resolved``           处置完毕，待网格员核查
``case.closed``             已办结, with the invitation to rate until ``rate_until``
``case.reopened``           返工, with its reason
==========================  ===========================================================

Each change becomes one *feedback message* per follower and channel: a webhook POST (the
reporter's own ``webhook_url``, else the deployment's default) and an SMS to the
reporter's phone. A message's ``delivery_id`` is derived from the event, the follower and
the channel, so a redelivered event yields the same id and the receiving app can dedupe.
A failed send is retried on the :data:`BACKOFF_S` schedule and given up after a bounded
number of attempts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import urlsplit

from shared.privacy import mask_phone, mask_text

from .dispatch import links as case_links
from .dispatch import message_id

SCHEMA_VERSION = 1
ORIGINAL = "reporter"  # the follower key of a case's own reporter
WEBHOOK, SMS = "webhook", "sms"
CHANNELS = (WEBHOOK, SMS)
OPEN, CLOSED = "open", "closed"

# delivery states
PENDING, SENT, FAILED = "pending", "sent", "failed"

# Seconds to wait after failed attempt n (1-based) before the next one; after the last
# entry the last delay repeats until max attempts.
BACKOFF_S: tuple[int, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
MAX_ATTEMPTS = 10  # 1 + 9 retries: about 15 hours of trying
SMS_DETAIL_MAX = 70  # characters of a department's free text carried by an SMS
SMS_SIGNATURE = "【网格反馈】"

# What the reporter hears about (a reporter.attached is told only to the new follower).
FEEDBACK_EVENTS = (
    "case.routed", "reporter.attached", "assignment.progressed", "case.resolved",
    "case.closed", "case.reopened",
)


# -- followers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Follower:
    """Someone who gets a case's feedback. ``since`` / ``until`` are the times of the last
    attach and detach; events may arrive out of order, so the later one wins."""

    key: str  # ORIGINAL, or duplicate:<the duplicate's case id>
    reporter: Mapping[str, Any]  # kind, id, name, phone, webhook_url
    since: datetime | None
    until: datetime | None = None
    report_id: str = ""
    duplicate_case_id: str | None = None

    @property
    def active(self) -> bool:
        return self.since is not None and (self.until is None or self.since > self.until)


def duplicate_key(duplicate_case_id: str) -> str:
    return f"duplicate:{duplicate_case_id}"


def original(reporter: Mapping[str, Any], at: datetime) -> Follower:
    return Follower(ORIGINAL, dict(reporter), since=at)


def attach(current: Follower | None, reporter: Mapping[str, Any], report_id: str,
           duplicate_case_id: str, at: datetime) -> Follower:
    """A duplicate's reporter follows the case from ``at`` (unless detached later)."""
    base = current or Follower(duplicate_key(duplicate_case_id), {}, since=None,
                               duplicate_case_id=duplicate_case_id)
    since = at if base.since is None else max(base.since, at)
    return replace(base, reporter=dict(reporter), since=since, report_id=report_id,
                   duplicate_case_id=duplicate_case_id)


def detach(current: Follower | None, reporter: Mapping[str, Any], duplicate_case_id: str,
           at: datetime) -> Follower:
    """The duplicate's reporter stops following at ``at``. Kept (inactive) so that an
    attach that arrives late, but happened earlier, does not bring it back."""
    base = current or Follower(duplicate_key(duplicate_case_id), dict(reporter), since=None,
                               duplicate_case_id=duplicate_case_id)
    until = at if base.until is None else max(base.until, at)
    return replace(base, until=until)


# -- changes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One change a reporter should know about."""

    type: str
    case_id: str
    status: str  # open | closed
    notes: str  # the status note, in full
    sms: str  # the same, short enough for a text message
    at: datetime
    links: Mapping[str, str]
    rate_until: datetime | None = None


@dataclass(frozen=True)
class CaseContext:
    """What notify knows of the case and the deployment to word a change."""

    case_id: str
    public_url: str
    category_name: str = ""
    lead: str | None = None  # department code
    department_names: Mapping[str, str] | None = None
    tz: tzinfo = UTC

    def name_of(self, department: str | None) -> str:
        if not department:
            return ""
        return (self.department_names or {}).get(department) or department


def rating_link(public_url: str, case_id: str) -> str:
    return f"{public_url}/api/v1/cases/{case_id}/rating"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _local(when: datetime, tz: tzinfo) -> str:
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def change_for(event_type: str, data: Mapping[str, Any], ctx: CaseContext,
               occurred_at: datetime) -> Change | None:
    """The change ``event_type`` means to a reporter, or None if it means nothing."""
    links = case_links(ctx.public_url, ctx.case_id)
    status, rate_until = OPEN, None
    if event_type == "case.routed":
        what = f"“{ctx.category_name}”" if ctx.category_name else ""
        lead = ctx.name_of(ctx.lead)
        notes = (f"受理：您反映的{what}问题已受理，由{lead}牵头办理。" if lead
                 else f"受理：您反映的{what}问题已受理，正在派单办理。")
        sms, at = notes, data.get("routed_at")
    elif event_type == "reporter.attached":
        notes = (f"受理：您反映的问题与案件{ctx.case_id}为同一问题，已合并办理，"
                 "办理进展将一并告知您。")
        sms, at = notes, data.get("at")
    elif event_type == "assignment.progressed":
        who = ctx.name_of(data["department"])
        notes = f"进展：{who}：{data['note']}"
        sms = f"进展：{who}：{_clip(data['note'], SMS_DETAIL_MAX)}"
        at = data.get("at")
    elif event_type == "case.resolved":
        notes = "处置完毕，待网格员核查。"
        sms, at = notes, data.get("resolved_at")
    elif event_type == "case.closed":
        status, rate_until = CLOSED, data["rate_until"]
        links = {**links, "rating": rating_link(ctx.public_url, ctx.case_id)}
        notes = (f"已办结。欢迎您在{_local(rate_until, ctx.tz)}前对办理结果进行评价："
                 f"{links['rating']}")
        sms, at = notes, data.get("closed_at")
    elif event_type == "case.reopened":
        notes = f"返工：{data['reason']}。已重新交办处理。"
        sms = f"返工：{_clip(data['reason'], SMS_DETAIL_MAX)}。已重新交办处理。"
        at = data.get("at")
    else:
        return None
    return Change(event_type, ctx.case_id, status, notes, sms, at or occurred_at, links,
                  rate_until)


# -- messages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedbackMessage:
    """One send to one follower on one channel."""

    delivery_id: str
    follower: str
    channel: str  # webhook | sms
    address: str  # the URL, or the phone number
    body: dict[str, Any]  # webhook: the JSON body; sms: {"phone", "text"}


def delivery_id(source_event_id: str, follower: str, channel: str) -> str:
    return message_id(source_event_id, f"{follower}/{channel}", "feedback")


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat()


def webhook_body(change: Change, follower: Follower, delivery: str) -> dict[str, Any]:
    """What the reporter's app receives. ``delivery_id`` is stable across retries and
    redeliveries: dedupe on it. No name and no phone: the app knows its reporter by id."""
    reporter = follower.reporter
    return {
        "delivery_id": delivery,
        "schema_version": SCHEMA_VERSION,
        "type": change.type,
        "case_id": change.case_id,
        "status": change.status,
        "status_notes": change.notes,
        "at": _iso(change.at),
        "rate_until": _iso(change.rate_until),
        "links": dict(change.links),
        "reporter": {"kind": reporter.get("kind", ""), "id": reporter.get("id", "")},
        # for a duplicate's reporter: the case and report they were given when reporting
        "reported_as": None if follower.duplicate_case_id is None else {
            "case_id": follower.duplicate_case_id, "report_id": follower.report_id},
    }


def sms_text(change: Change) -> str:
    return f"{SMS_SIGNATURE}案件{change.case_id}：{change.sms}"


def normalise_phone(phone: str) -> str:
    return re.sub(r"[\s\-()]", "", phone or "")


def messages_for(change: Change, followers: Iterable[Follower], source_event_id: str,
                 default_webhook: str | None) -> list[FeedbackMessage]:
    """One message per active follower and channel: the webhook (the reporter's own URL,
    else ``default_webhook``) and an SMS when the reporter gave a phone. A phone that two
    followers share gets one SMS."""
    out: list[FeedbackMessage] = []
    texted: set[str] = set()
    for f in sorted(followers, key=lambda f: (f.key != ORIGINAL, f.key)):
        if not f.active:
            continue
        url = f.reporter.get("webhook_url") or default_webhook
        if url:
            did = delivery_id(source_event_id, f.key, WEBHOOK)
            out.append(FeedbackMessage(did, f.key, WEBHOOK, url, webhook_body(change, f, did)))
        phone = normalise_phone(str(f.reporter.get("phone") or ""))
        if phone and phone not in texted:
            texted.add(phone)
            did = delivery_id(source_event_id, f.key, SMS)
            out.append(FeedbackMessage(did, f.key, SMS, phone,
                                       {"phone": phone, "text": sms_text(change)}))
    return out


# -- sending: outcomes, backoff, personal data ----------------------------------------------------
def backoff(attempts: int) -> timedelta:
    """How long to wait after ``attempts`` failed attempts (1 = the first send failed)."""
    return timedelta(seconds=BACKOFF_S[min(max(attempts, 1), len(BACKOFF_S)) - 1])


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: sent, or failed (``permanent``: do not try again)."""

    ok: bool
    error: str = ""
    permanent: bool = False


SENT_OK = Outcome(True)


def http_outcome(status: int, reason: str = "") -> Outcome:
    """2xx is success; a 4xx other than 408 and 429 will not get better (permanent);
    anything else (3xx, 408, 429, 5xx) is retried."""
    if 200 <= status < 300:
        return SENT_OK
    error = f"HTTP {status}" + (f" {reason}" if reason else "")
    return Outcome(False, error, permanent=400 <= status < 500 and status not in (408, 429))


@dataclass(frozen=True)
class Next:
    """A delivery's state after an attempt."""

    state: str
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None


def after_attempt(outcome: Outcome, attempts: int, now: datetime,
                  max_attempts: int = MAX_ATTEMPTS) -> Next:
    """``attempts`` counts this one."""
    if outcome.ok:
        return Next(SENT, None, now, None)
    error = mask_text(outcome.error)[:1000]
    if outcome.permanent or attempts >= max_attempts:
        return Next(FAILED, None, None, error)
    return Next(PENDING, now + backoff(attempts), None, error)


def mask_address(channel: str, address: str) -> str:
    """Where a message went, fit for logs: a masked phone, or the webhook's host only (its
    path and query may carry a token)."""
    if channel == SMS:
        return mask_phone(address)
    parts = urlsplit(address)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
