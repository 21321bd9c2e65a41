"""The demo clock: ScaledClock, the environment that configures it, where a demo day starts,
and the ClockProvider every service uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from shared.clock import (
    EPOCH_VAR,
    SPEED_VAR,
    START_VAR,
    FakeClock,
    ScaledClock,
    SystemClock,
    clock_from_env,
    working_morning,
)
from shared.extensions.context import ClockProvider
from shared.reference import load_reference

SH = ZoneInfo("Asia/Shanghai")
DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"
EPOCH = datetime(2026, 11, 23, 21, 30, tzinfo=UTC)  # real: Tue 05:30 in Beijing
START = datetime(2026, 11, 24, 8, 30, tzinfo=SH)  # demo: Tue 08:30


class Real:
    """A real clock the test moves."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


# -- ScaledClock -----------------------------------------------------------------------------


def test_demo_time_is_start_plus_real_elapsed_times_speed() -> None:
    real = Real(EPOCH)
    clock = ScaledClock(START, EPOCH, 60, real=real)
    assert clock.now() == START
    real.at = EPOCH + timedelta(seconds=30)
    assert clock.now() == START + timedelta(minutes=30)  # a report-in deadline in 30 s
    real.at = EPOCH + timedelta(minutes=24)
    assert clock.now() == START + timedelta(days=1)  # a demo day in 24 minutes
    assert clock.now().tzinfo is not None


def test_speed_one_is_a_shifted_wall_clock_and_fractions_slow_it_down() -> None:
    real = Real(EPOCH)
    shifted = ScaledClock(START, EPOCH, 1, real=real)
    slow = ScaledClock(START, EPOCH, 0.5, real=real)
    real.at = EPOCH + timedelta(hours=2)
    assert shifted.now() == START + timedelta(hours=2)
    assert slow.now() == START + timedelta(hours=1)


def test_real_at_is_the_inverse_of_now() -> None:
    real = Real(EPOCH + timedelta(seconds=123.5))
    clock = ScaledClock(START, EPOCH, 600, real=real)
    assert clock.real_at(clock.now()) == real.at
    assert clock.real_at(START + timedelta(hours=10)) == EPOCH + timedelta(minutes=1)


def test_the_clock_is_monotonic_with_real_time() -> None:
    real = Real(EPOCH)
    clock = ScaledClock(START, EPOCH, 60, real=real)
    seen = []
    for step in range(50):
        real.at = EPOCH + timedelta(milliseconds=137 * step)
        seen.append(clock.now())
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


@pytest.mark.parametrize("speed", [0, -1, 1e9])
def test_a_speed_out_of_range_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        ScaledClock(START, EPOCH, speed)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ScaledClock(datetime(2026, 11, 24, 8, 30), EPOCH, 60)


# -- from the environment ------------------------------------------------------------------------


def test_no_variables_or_speed_one_is_the_system_clock() -> None:
    assert isinstance(clock_from_env({}), SystemClock)
    assert isinstance(clock_from_env({SPEED_VAR: "1"}), SystemClock)
    assert isinstance(clock_from_env({SPEED_VAR: ""}), SystemClock)


def test_every_process_given_the_same_variables_reads_the_same_time() -> None:
    env = ScaledClock(START, EPOCH, 60).env()
    assert set(env) == {SPEED_VAR, START_VAR, EPOCH_VAR}
    a, b = clock_from_env(env), clock_from_env(dict(env))
    assert isinstance(a, ScaledClock) and isinstance(b, ScaledClock)
    assert (a.start, a.epoch, a.speed) == (b.start, b.epoch, b.speed) == (START, EPOCH, 60)
    real = Real(EPOCH + timedelta(seconds=42))
    a._real = b._real = real
    assert a.now() == b.now() == START + timedelta(minutes=42)


def test_a_lookup_function_works_as_well_as_a_mapping() -> None:
    env = ScaledClock(START, EPOCH, 60).env()
    clock = clock_from_env(env.get)
    assert isinstance(clock, ScaledClock) and clock.speed == 60


def test_start_alone_means_the_demo_began_there_at_that_real_instant() -> None:
    clock = clock_from_env({START_VAR: START.isoformat()})
    assert isinstance(clock, ScaledClock)
    assert clock.speed == 1 and clock.epoch == clock.start == START


def test_a_speed_without_start_or_epoch_is_refused_so_processes_cannot_disagree() -> None:
    with pytest.raises(ValueError, match="GRIDFLOW_CLOCK_START"):
        clock_from_env({SPEED_VAR: "60"})


@pytest.mark.parametrize("env,fragment", [
    ({SPEED_VAR: "fast", START_VAR: "2026-11-24T08:30:00+08:00"}, "not a number"),
    ({SPEED_VAR: "0", START_VAR: "2026-11-24T08:30:00+08:00"}, "> 0"),
    ({SPEED_VAR: "60", START_VAR: "tomorrow"}, "ISO 8601"),
    ({SPEED_VAR: "60", START_VAR: "2026-11-24T08:30:00"}, "UTC offset"),
    ({SPEED_VAR: "60", START_VAR: "2026-11-24T08:30:00+08:00", EPOCH_VAR: "x"}, EPOCH_VAR),
])
def test_bad_values_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        clock_from_env(env)


# -- where a demo day starts ---------------------------------------------------------------------


def calendar():
    return load_reference(DEMO).calendar


def test_the_demo_day_starts_at_the_first_working_hour_of_today() -> None:
    early = datetime(2026, 11, 24, 5, 29, tzinfo=SH)  # Tuesday, before work
    late = datetime(2026, 11, 24, 22, 0, tzinfo=SH)  # Tuesday night
    assert working_morning(calendar(), early) == datetime(2026, 11, 24, 8, 30, tzinfo=SH)
    assert working_morning(calendar(), late) == datetime(2026, 11, 24, 8, 30, tzinfo=SH)


def test_on_a_weekend_or_a_holiday_it_is_the_next_working_day() -> None:
    saturday = datetime(2026, 11, 28, 10, 0, tzinfo=SH)
    national_day = datetime(2026, 10, 2, 10, 0, tzinfo=SH)
    makeup_sunday = datetime(2026, 9, 20, 10, 0, tzinfo=SH)  # 调休: worked
    assert working_morning(calendar(), saturday) == datetime(2026, 11, 30, 8, 30, tzinfo=SH)
    assert working_morning(calendar(), national_day) == datetime(2026, 10, 8, 8, 30, tzinfo=SH)
    assert working_morning(calendar(), makeup_sunday) == datetime(2026, 9, 20, 8, 30, tzinfo=SH)


def test_a_second_run_never_goes_back_before_the_demo_time_the_last_one_reached() -> None:
    today = datetime(2026, 11, 24, 9, 0, tzinfo=SH)
    reached = datetime(2026, 11, 25, 7, 10, tzinfo=SH)  # the last run got to Wed 07:10
    assert working_morning(calendar(), today, not_before=reached) == \
        datetime(2026, 11, 25, 8, 30, tzinfo=SH)
    reached = datetime(2026, 11, 27, 15, 0, tzinfo=SH)  # Friday afternoon: Monday next
    assert working_morning(calendar(), today, not_before=reached) == \
        datetime(2026, 11, 30, 8, 30, tzinfo=SH)
    earlier = datetime(2026, 11, 20, 15, 0, tzinfo=SH)  # an old run: today it is
    assert working_morning(calendar(), today, not_before=earlier) == \
        datetime(2026, 11, 24, 8, 30, tzinfo=SH)


# -- the services' clock --------------------------------------------------------------------------


def _provider(config: dict, clock=None) -> ClockProvider:
    provider = ClockProvider(clock)
    provider.container = SimpleNamespace(config=config)  # what nameko's bind sets
    provider.setup()
    return provider


def test_the_provider_reads_the_demo_clock_from_config_or_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    env = ScaledClock(START, EPOCH, 60).env()
    from_config = _provider(env).get_dependency(None)
    assert isinstance(from_config, ScaledClock) and from_config.speed == 60
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from_env = _provider({}).get_dependency(None)
    assert isinstance(from_env, ScaledClock) and from_env.start == START


def test_the_provider_is_the_system_clock_without_variables() -> None:
    assert isinstance(_provider({}).get_dependency(None), SystemClock)


def test_an_explicit_clock_wins_and_fake_clocks_keep_working(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ScaledClock(START, EPOCH, 60).env().items():
        monkeypatch.setenv(key, value)
    fake = FakeClock()
    got = _provider({}, fake).get_dependency(None)
    assert got is fake
    before = got.now()
    fake.advance(timedelta(hours=1))
    assert got.now() == before + timedelta(hours=1)


# -- gridflow up's demo clock ----------------------------------------------------------------------


def test_up_gives_every_child_the_same_clock_and_a_margin_in_demo_seconds() -> None:
    from gridflow.supervisor import clock_env

    clock = ScaledClock(START, EPOCH, 60)
    env = clock_env({"PATH": "/bin", "GRIDFLOW_AUDIT_MARGIN_S": ""}, clock)
    assert env["PATH"] == "/bin" and env[SPEED_VAR] == "60"
    assert clock_from_env(env).start == START
    assert clock_env({"PATH": "/bin"}, clock)["GRIDFLOW_AUDIT_MARGIN_S"] == "3600"
    assert clock_env({"GRIDFLOW_AUDIT_MARGIN_S": "5"}, clock)["GRIDFLOW_AUDIT_MARGIN_S"] == "5"
    real_time = clock_env({"PATH": "/bin", **clock.env()}, None)  # --speed 1
    assert real_time == {"PATH": "/bin"}


def test_up_resumes_after_the_demo_time_a_previous_run_reached(tmp_path: Path) -> None:
    from gridflow.supervisor import demo_clock, last_demo_time, save_demo_time

    assert last_demo_time(tmp_path) is None
    now = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # Tue 09:00 in Beijing
    first = demo_clock(calendar(), tmp_path, 60, now=now)
    assert first.start == datetime(2026, 11, 24, 8, 30, tzinfo=SH) and first.epoch == now
    first._real = Real(now + timedelta(minutes=30))  # 30 real minutes: 30 demo hours
    save_demo_time(tmp_path, first)
    assert last_demo_time(tmp_path) == datetime(2026, 11, 25, 14, 30, tzinfo=SH)  # Wed
    again = demo_clock(calendar(), tmp_path, 60, now=now + timedelta(hours=1))
    assert again.start == datetime(2026, 11, 26, 8, 30, tzinfo=SH)  # Thursday morning
    (tmp_path / "demo-clock.json").write_text("not json")
    assert demo_clock(calendar(), tmp_path, 60, now=now).start == first.start
