"""Durations and the working-hours calendar."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from shared.calendar import Duration, WorkCalendar
from shared.reference import load_reference

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"
SH = ZoneInfo("Asia/Shanghai")


def demo() -> WorkCalendar:
    return load_reference(DEMO).calendar


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=SH)


# -- Duration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "unit", "working"),
    [
        ("30m", 30, "minutes", False),
        ("2h", 2, "hours", False),
        ("1d", 1, "days", False),
        ("4wh", 4, "working_hours", True),
        ("2wd", 2, "working_days", True),
        (" 15 m ", 15, "minutes", False),
        ("10wd", 10, "working_days", True),
    ],
)
def test_duration_parse(text, amount, unit, working):
    d = Duration.parse(text)
    assert (d.amount, d.unit, d.working) == (amount, unit, working)
    assert Duration.parse(str(d)) == d
    assert d.as_dict() == {"amount": amount, "unit": unit, "text": str(d)}


@pytest.mark.parametrize(
    "text", ["", "4", "h", "4x", "-1h", "1.5h", "4 hours", "wh4", "4hw", "2w", "1wdd"]
)
def test_duration_parse_errors(text):
    with pytest.raises(ValueError, match="duration"):
        Duration.parse(text)


# -- the demo calendar -----------------------------------------------------------------------


def test_demo_calendar_settings():
    cal = demo()
    assert cal.tz == SH
    assert cal.day_length == timedelta(hours=7)
    assert cal.periods == ((time(8, 30), time(12, 0)), (time(14, 0), time(17, 30)))
    assert cal.weekend == frozenset({5, 6})


def test_demo_calendar_2026_dates():
    cal = demo()
    # every make-up workday is a weekend day, and no date is both a holiday and a workday
    assert cal.workdays
    assert all(d.weekday() >= 5 for d in cal.workdays)
    assert not cal.holidays & cal.workdays
    assert all(d.year == 2026 for d in cal.holidays | cal.workdays)
    for day in (
        date(2026, 1, 1),
        date(2026, 2, 17),
        date(2026, 4, 6),
        date(2026, 5, 5),
        date(2026, 6, 19),
        date(2026, 9, 25),
        date(2026, 10, 7),
    ):
        assert not cal.is_workday(day), day
    for day in (
        date(2026, 1, 4),
        date(2026, 2, 14),
        date(2026, 2, 28),
        date(2026, 5, 9),
        date(2026, 9, 20),
        date(2026, 10, 10),
    ):
        assert cal.is_workday(day), day
    assert cal.is_workday(date(2026, 3, 10))  # an ordinary Tuesday
    assert not cal.is_workday(date(2026, 3, 14))  # an ordinary Saturday
    # 2026: 365 days − 104 weekend days − 19 weekday holidays + 6 make-up days = 248,
    # i.e. 365 − 104 − the 13 statutory holiday days (调休 only moves days around)
    worked = sum(cal.is_workday(date(2026, 1, 1) + timedelta(days=i)) for i in range(365))
    assert worked == 248


# -- adding working time ----------------------------------------------------------------------


def test_four_working_hours_from_friday_afternoon_land_on_monday():
    cal = demo()
    start = at(2026, 3, 6, 16, 0)  # Friday
    assert start.weekday() == 4
    due = cal.add(start, Duration.parse("4wh"))
    # 1.5 h on Friday, then 2.5 h from 08:30 on Monday
    assert due == at(2026, 3, 9, 11, 0)
    assert due.astimezone(SH).weekday() == 0


def test_lunch_break_is_skipped():
    cal = demo()
    assert cal.add(at(2026, 3, 9, 11, 0), Duration.parse("2wh")) == at(2026, 3, 9, 15, 0)
    # starting inside the lunch break counts from 14:00
    assert cal.add(at(2026, 3, 9, 12, 30), Duration.parse("1wh")) == at(2026, 3, 9, 15, 0)
    # starting before the working day counts from 08:30
    assert cal.add(at(2026, 3, 9, 6, 0), Duration.parse("4wh")) == at(2026, 3, 9, 14, 30)


def test_a_deadline_on_the_end_of_a_period_stays_there():
    cal = demo()
    monday = at(2026, 3, 9, 8, 30)
    assert cal.add(monday, Duration.parse("1wd")) == at(2026, 3, 9, 17, 30)
    assert cal.add_working(monday, timedelta(hours=3, minutes=30)) == at(2026, 3, 9, 12, 0)
    assert cal.add_working(monday, timedelta(hours=3, minutes=31)) == at(2026, 3, 9, 14, 1)


def test_a_holiday_is_skipped():
    cal = demo()
    # Friday 3 April 16:00; 4–6 April is 清明 (Saturday to Monday)
    assert cal.add(at(2026, 4, 3, 16, 0), Duration.parse("4wh")) == at(2026, 4, 7, 11, 0)
    # National Day week: from the last working hour before it to the day after
    assert cal.add(at(2026, 9, 30, 17, 0), Duration.parse("1wh")) == at(2026, 10, 8, 9, 0)


def test_a_make_up_saturday_is_counted():
    cal = demo()
    assert cal.add(at(2026, 2, 13, 16, 0), Duration.parse("4wh")) == at(2026, 2, 14, 11, 0)
    assert cal.add(at(2026, 2, 27, 16, 0), Duration.parse("4wh")) == at(2026, 2, 28, 11, 0)
    # and a make-up Sunday
    assert cal.add(at(2026, 9, 18, 17, 0), Duration.parse("1wh")) == at(2026, 9, 20, 9, 0)


def test_natural_durations_ignore_the_calendar():
    cal = demo()
    friday_evening = at(2026, 3, 6, 17, 0)
    assert cal.add(friday_evening, Duration.parse("1h")) == at(2026, 3, 6, 18, 0)
    assert cal.add(friday_evening, Duration.parse("30m")) == at(2026, 3, 6, 17, 30)
    assert cal.add(friday_evening, Duration.parse("1d")) == at(2026, 3, 7, 17, 0)
    holiday_noon = at(2026, 10, 1, 12, 0)
    assert cal.add(holiday_noon, Duration.parse("2h")) == at(2026, 10, 1, 14, 0)


def test_working_days_are_multiples_of_the_day_length():
    cal = demo()
    start = at(2026, 3, 10, 10, 0)  # Tuesday
    assert cal.add(start, Duration.parse("1wd")) == at(2026, 3, 11, 10, 0)
    assert cal.add(start, Duration.parse("2wd")) == cal.add_working(start, timedelta(hours=14))
    assert cal.add(start, Duration.parse("5wd")) == at(2026, 3, 17, 10, 0)
    # across the Spring Festival: Sat 14 Feb is worked, 15–23 Feb are not
    assert cal.add(at(2026, 2, 13, 10, 0), Duration.parse("1wd")) == at(2026, 2, 14, 10, 0)
    assert cal.add(at(2026, 2, 13, 10, 0), Duration.parse("2wd")) == at(2026, 2, 24, 10, 0)
    for n in range(1, 6):
        d = Duration(n, "working_days")
        assert cal.working_between(start, cal.add(start, d)) == cal.day_length * n


def test_start_in_another_timezone_and_naive_start():
    cal = demo()
    start_utc = datetime(2026, 3, 6, 8, 0, tzinfo=UTC)  # 16:00 in Shanghai
    assert cal.add(start_utc, Duration.parse("4wh")) == at(2026, 3, 9, 11, 0)
    with pytest.raises(ValueError, match="aware"):
        cal.add(datetime(2026, 3, 6, 16, 0), Duration.parse("4wh"))
    assert cal.add_working(start_utc, timedelta(0)) == start_utc


def test_working_between_basics():
    cal = demo()
    assert cal.working_between(at(2026, 3, 9, 8, 30), at(2026, 3, 9, 17, 30)) == timedelta(hours=7)
    assert cal.working_between(at(2026, 3, 9, 12, 0), at(2026, 3, 9, 14, 0)) == timedelta(0)
    assert cal.working_between(at(2026, 3, 6, 16, 0), at(2026, 3, 9, 11, 0)) == timedelta(hours=4)
    assert cal.working_between(at(2026, 3, 9, 11, 0), at(2026, 3, 6, 16, 0)) == timedelta(0)
    # the whole Spring Festival break holds no working time
    assert cal.working_between(at(2026, 2, 14, 17, 30), at(2026, 2, 24, 8, 30)) == timedelta(0)


def _in_working_period(cal: WorkCalendar, moment: datetime) -> bool:
    local = moment.astimezone(cal.tz)
    if not cal.is_workday(local.date()):
        return False
    return any(a < local.time() <= b for a, b in cal.periods)


def test_working_between_is_consistent_with_add_working():
    cal = demo()
    rng = random.Random(20261101)
    base = at(2026, 1, 1)
    for _ in range(400):
        start = base + timedelta(minutes=rng.randrange(0, 360 * 24 * 60))
        amount = timedelta(minutes=rng.randrange(1, 10 * 7 * 60))
        due = cal.add_working(start, amount)
        assert due > start
        assert cal.working_between(start, due) == amount, (start, amount, due)
        # the deadline falls inside a working period, and is the earliest such instant
        assert _in_working_period(cal, due), (start, amount, due)
        assert cal.working_between(start, due - timedelta(minutes=1)) < amount
        # splitting the amount in two gives the same deadline
        part = timedelta(minutes=rng.randrange(1, amount // timedelta(minutes=1) + 1))
        if part < amount:
            assert cal.add_working(cal.add_working(start, part), amount - part) == due


# -- calendar configuration --------------------------------------------------------------------


def test_custom_calendar_from_dict():
    cal = WorkCalendar.from_dict(
        {
            "timezone": "Asia/Shanghai",
            "weekend": ["sunday"],
            "working_hours": [["09:00", "12:00"], ["13:00", "18:00"]],
            "holidays": ["2026-03-10"],
            "workdays": [date(2026, 3, 15)],
        }
    )
    assert cal.day_length == timedelta(hours=8)
    assert cal.is_workday(date(2026, 3, 14))  # Saturday: a six-day week
    assert not cal.is_workday(date(2026, 3, 10))
    assert cal.is_workday(date(2026, 3, 15))
    # Monday 17:00 + 2wh: 1 h on Monday, Tuesday is a holiday, 1 h on Wednesday from 09:00
    assert cal.add(at(2026, 3, 9, 17, 0), Duration.parse("2wh")) == at(2026, 3, 11, 10, 0)


@pytest.mark.parametrize(
    "hours",
    [
        [["12:00", "08:30"]],
        [["08:30", "08:30"]],
        [["08:30", "14:30"], ["14:00", "17:30"]],
        [["14:00", "17:30"], ["08:30", "12:00"]],
    ],
)
def test_bad_working_hours(hours):
    with pytest.raises(ValueError, match="working_hours"):
        WorkCalendar.from_dict({"working_hours": hours})
