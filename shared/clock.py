"""Injectable time. Services ask a Clock for ``now``; tests drive a FakeClock.

Domain time (reports, deadlines, escalations, the ledger, ratings) comes from a Clock.
Bookkeeping that has nothing to do with the district's day (outbox and inbox rows, dead-letter
headers, log lines) keeps real time: ``utcnow``.

A demo runs on a ``ScaledClock``: demo time = ``start + (real now - epoch) * speed``, set by
three environment variables that every process of a deployment is given alike, so that they
all agree on the time:

- ``GRIDFLOW_CLOCK_SPEED``  how many demo seconds pass each real second (default 1: off);
- ``GRIDFLOW_CLOCK_START``  the demo instant the clock starts at (ISO 8601 with an offset);
- ``GRIDFLOW_CLOCK_EPOCH``  the real instant at which demo time was START (ISO 8601).

``gridflow up --speed 60`` sets them (a demo day in 24 minutes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

SPEED_VAR = "GRIDFLOW_CLOCK_SPEED"
START_VAR = "GRIDFLOW_CLOCK_START"
EPOCH_VAR = "GRIDFLOW_CLOCK_EPOCH"
CLOCK_VARS = (SPEED_VAR, START_VAR, EPOCH_VAR)
MAX_SPEED = 100_000.0


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


class ScaledClock:
    """Demo time: ``start + (real now - epoch) * speed``.

    Two processes given the same start, epoch and speed read the same time (up to their
    hosts' clock skew times ``speed``). ``real`` is the real clock (injectable for tests).
    """

    def __init__(
        self,
        start: datetime,
        epoch: datetime,
        speed: float,
        real: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if start.tzinfo is None or epoch.tzinfo is None:
            raise ValueError("ScaledClock: start and epoch must be timezone-aware")
        if not 0 < speed <= MAX_SPEED:
            raise ValueError(f"ScaledClock: speed must be > 0 and at most {MAX_SPEED:g}")
        self.start = start.astimezone(UTC)
        self.epoch = epoch.astimezone(UTC)
        self.speed = float(speed)
        self._real = real

    def now(self) -> datetime:
        return self.start + (self._real() - self.epoch) * self.speed

    def real_at(self, demo: datetime) -> datetime:
        """The real instant at which the demo clock shows ``demo``."""
        return self.epoch + (demo - self.start) / self.speed

    def env(self) -> dict[str, str]:
        """The environment variables that make another process read this clock."""
        return {
            SPEED_VAR: f"{self.speed:g}",
            START_VAR: self.start.isoformat(),
            EPOCH_VAR: self.epoch.isoformat(),
        }

    def __repr__(self) -> str:
        return (f"ScaledClock(start={self.start.isoformat()}, epoch={self.epoch.isoformat()}, "
                f"speed={self.speed:g})")


def _instant(name: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"{name}={text!r} is not an ISO 8601 instant "
                         "(e.g. 2026-11-24T08:30:00+08:00)") from exc
    if value.tzinfo is None:
        raise ValueError(f"{name}={text!r} has no UTC offset; add one, e.g. +08:00")
    return value


def clock_from_env(environ: Mapping[str, Any] | Callable[[str], Any] | None = None) -> Clock:
    """The clock the environment asks for: a ScaledClock when ``GRIDFLOW_CLOCK_SPEED`` is
    not 1 or ``GRIDFLOW_CLOCK_START`` is set, else the SystemClock.

    ``environ`` is a mapping or a ``key -> value`` function (default ``os.environ``).
    A START without an EPOCH (or the reverse) uses the one for the other: demo time was
    START at that same real instant. A speed other than 1 needs at least one of them, or
    processes started at different moments would disagree: that is a ValueError.
    """
    if environ is None:
        environ = os.environ
    get = environ if callable(environ) else environ.get

    def read(name: str) -> str:
        value = get(name)
        return "" if value is None else str(value).strip()

    speed_text, start_text, epoch_text = read(SPEED_VAR), read(START_VAR), read(EPOCH_VAR)
    try:
        speed = float(speed_text) if speed_text else 1.0
    except ValueError as exc:
        raise ValueError(f"{SPEED_VAR}={speed_text!r} is not a number") from exc
    if not 0 < speed <= MAX_SPEED:
        raise ValueError(f"{SPEED_VAR}={speed_text!r}: use a number > 0 and <= {MAX_SPEED:g}")
    if not start_text and not epoch_text:
        if speed != 1.0:
            raise ValueError(f"{SPEED_VAR}={speed_text} needs {START_VAR} and {EPOCH_VAR}, so "
                             "that every process reads the same demo time")
        return SystemClock()
    start = _instant(START_VAR, start_text or epoch_text)
    epoch = _instant(EPOCH_VAR, epoch_text or start_text)
    return ScaledClock(start, epoch, speed)


def working_morning(calendar: Any, real_now: datetime,
                    not_before: datetime | None = None) -> datetime:
    """Where a demo day starts: the first working period's start (08:30 in the demo
    calendar) of today in the calendar's time zone, or of the next working day when today
    is not one; and never before ``not_before`` (a demo time an earlier run reached: the
    next working morning after it then), so that a second run does not go back in time.

    ``calendar`` is a ``shared.calendar.WorkCalendar`` (``tz``, ``periods``, ``is_workday``).
    """
    tz = calendar.tz
    first: time = calendar.periods[0][0] if calendar.periods else time(8, 30)

    def morning_on_or_after(day: date) -> datetime:
        for _ in range(366):
            if calendar.is_workday(day):
                return datetime.combine(day, first, tz)
            day += timedelta(days=1)
        return datetime.combine(day, first, tz)

    start = morning_on_or_after(real_now.astimezone(tz).date())
    if not_before is not None and not_before > start:
        later = not_before.astimezone(tz)
        day = later.date() if later.time() <= first else later.date() + timedelta(days=1)
        start = morning_on_or_after(day)
    return start.astimezone(UTC)


def utcnow() -> datetime:
    """Real time, for bookkeeping (outbox, inbox, dead-letter headers): never demo time."""
    return datetime.now(UTC)
