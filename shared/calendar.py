"""Durations and the working-hours calendar that deadlines are counted on.

Pure domain code. A duration is written ``<amount><unit>``: ``30m``, ``2h``, ``1d`` count
natural time; ``4wh`` (working hours) and ``2wd`` (working days) count only the calendar's
working periods, skipping weekends and holidays and counting make-up workdays (调休).
A working day is one full day of working periods (``08:30–12:00`` + ``14:00–17:30`` = 7 h).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

_UNITS = {
    "m": "minutes",
    "h": "hours",
    "d": "days",
    "wh": "working_hours",
    "wd": "working_days",
}
_DURATION = re.compile(r"^\s*(\d+)\s*(wh|wd|m|h|d)\s*$")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MAX_DAYS_SCANNED = 3660


@dataclass(frozen=True)
class Duration:
    amount: int
    unit: str  # one of _UNITS' values

    @classmethod
    def parse(cls, text: str) -> Duration:
        m = _DURATION.match(text)
        if not m:
            raise ValueError(
                f"duration {text!r}: write <amount><unit> with unit m, h, d, wh or wd (e.g. 4wh)"
            )
        return cls(int(m.group(1)), _UNITS[m.group(2)])

    @property
    def working(self) -> bool:
        return self.unit.startswith("working_")

    def __str__(self) -> str:
        short = {v: k for k, v in _UNITS.items()}[self.unit]
        return f"{self.amount}{short}"

    def as_dict(self) -> dict[str, Any]:
        return {"amount": self.amount, "unit": self.unit, "text": str(self)}


@dataclass
class WorkCalendar:
    """Working periods per day, weekends, holidays and make-up workdays, in one time zone."""

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    periods: tuple[tuple[time, time], ...] = (
        (time(8, 30), time(12, 0)),
        (time(14, 0), time(17, 30)),
    )
    weekend: frozenset[int] = frozenset({5, 6})
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkCalendar:
        periods = tuple(
            (time.fromisoformat(str(a)), time.fromisoformat(str(b)))
            for a, b in data.get("working_hours", [["08:30", "12:00"], ["14:00", "17:30"]])
        )
        for a, b in periods:
            if not a < b:
                raise ValueError(f"working_hours: {a}–{b} is empty")
        if any(periods[i][1] > periods[i + 1][0] for i in range(len(periods) - 1)):
            raise ValueError("working_hours: periods must be in order and must not overlap")
        names = [str(d).lower() for d in data.get("weekend", ["saturday", "sunday"])]
        unknown = [d for d in names if d not in _WEEKDAYS]
        if unknown:
            raise ValueError(f"weekend: unknown day(s) {unknown}; use {_WEEKDAYS}")
        weekend = frozenset(_WEEKDAYS.index(d) for d in names)
        return cls(
            tz=ZoneInfo(str(data.get("timezone", "Asia/Shanghai"))),
            periods=periods,
            weekend=weekend,
            holidays=frozenset(_dates(data.get("holidays", ()))),
            workdays=frozenset(_dates(data.get("workdays", ()))),
        )

    @property
    def day_length(self) -> timedelta:
        return sum((_delta(a, b) for a, b in self.periods), timedelta())

    def is_workday(self, d: date) -> bool:
        if d in self.workdays:
            return True
        if d in self.holidays:
            return False
        return d.weekday() not in self.weekend

    def add(self, start: datetime, duration: Duration) -> datetime:
        """The deadline ``duration`` after ``start`` (an aware datetime), in UTC."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        natural = {
            "minutes": timedelta(minutes=1),
            "hours": timedelta(hours=1),
            "days": timedelta(days=1),
        }
        if duration.unit in natural:
            due = start + natural[duration.unit] * duration.amount
        elif duration.unit == "working_hours":
            due = self.add_working(start, timedelta(hours=duration.amount))
        else:
            due = self.add_working(start, self.day_length * duration.amount)
        return due.astimezone(UTC)

    def add_working(self, start: datetime, amount: timedelta) -> datetime:
        """Advance ``amount`` of working time from ``start``."""
        remaining = amount
        cursor = start.astimezone(self.tz)
        if remaining <= timedelta(0):
            return start
        for _ in range(_MAX_DAYS_SCANNED):
            day = cursor.date()
            if self.is_workday(day):
                for seg_start, seg_end in self._segments(day):
                    begin = max(cursor, seg_start)
                    if begin >= seg_end:
                        continue
                    available = seg_end - begin
                    if remaining <= available:
                        return begin + remaining
                    remaining -= available
            cursor = datetime.combine(day + timedelta(days=1), time(0), self.tz)
        raise ValueError("calendar has no working time within ten years")

    def working_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time between two instants (zero when b <= a)."""
        total = timedelta(0)
        if b <= a:
            return total
        cursor, end = a.astimezone(self.tz), b.astimezone(self.tz)
        while cursor < end:
            day = cursor.date()
            if self.is_workday(day):
                for seg_start, seg_end in self._segments(day):
                    lo, hi = max(cursor, seg_start), min(end, seg_end)
                    if lo < hi:
                        total += hi - lo
            cursor = datetime.combine(day + timedelta(days=1), time(0), self.tz)
        return total

    def _segments(self, day: date) -> Iterable[tuple[datetime, datetime]]:
        for a, b in self.periods:
            yield datetime.combine(day, a, self.tz), datetime.combine(day, b, self.tz)


def _delta(a: time, b: time) -> timedelta:
    today = date(2000, 1, 1)
    return datetime.combine(today, b) - datetime.combine(today, a)


def _dates(values: Sequence[Any]) -> Iterable[date]:
    for v in values:
        yield v if isinstance(v, date) else date.fromisoformat(str(v))
