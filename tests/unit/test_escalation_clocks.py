"""The rules of tiered response: clocks, what a missed deadline does by the case's policy
snapshot, pauses and extensions, who is told, and the supervision ledger's entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.escalation import clocks
from services.escalation.clocks import (
    CLOSE_REASONS,
    CLOSES,
    ESCALATE,
    EXHAUST,
    EXHAUSTED,
    FOLLOW_UP,
    FOLLOW_UP_DEPARTMENT,
    PAUSED,
    REMIND,
    REPORT_IN,
    RESOLVE,
    RUNNING,
    STOPPED,
    STOPS,
    ClockPlan,
    Missed,
    Outcome,
    case_step_after,
    extended_due,
    extended_remaining,
    history_entry,
    late_by,
    missed_list,
    on_due,
    plans_for,
    reason_for,
    recipients,
    remaining,
    restart_plan,
    resumed_due,
    state_on_arrival,
    tier_of,
    working_units,
)
from services.routing.rules import route_with
from shared.amqp.topology import SUBSCRIPTIONS
from shared.events import INTERNAL
from shared.grid import GridRegistry
from shared.reference import load_reference
from support import four_level_grid

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"
REF = load_reference(DEMO)
CAL = REF.calendar
GRID4 = four_level_grid()
BEIJING = ZoneInfo("Asia/Shanghai")

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
TONGGONG = "511802001001101"  # 通工小区, 桐梓林一片区, 桐梓林社区, 青江街道
TONGGONG4 = "511802001001001"  # 通工小区 on the 4-level grid

WHISTLE = {
    "routine": {"level": "routine", "report_in": "30m", "resolve": "1wd", "raise_to": None},
    "hard": {"level": "hard", "report_in": "30m", "resolve": "1wd", "raise_to": "district"},
}
# A small hand-written snapshot: community (reminded twice) straight to the district.
HAND: dict[str, Any] = {
    "name": "hand",
    "version": "t",
    "severity": "normal",
    "start": "community",
    "steps": [
        {"tier": "community", "notify": ["tier_owner"], "report_in": "1h", "resolve": "2wh",
         "repeat": 2},
        {"tier": "district", "notify": ["departments", "supervisors"], "report_in": "2h",
         "resolve": "1wd", "repeat": 0},
    ],
    "whistle": WHISTLE,
}

OWNERS = {  # the demo grid's nodes above 通工小区, as tier_info gives them
    "compound": ("511802001001101", "通工小区",
                 {"id": "gw-0001", "name": "邓海燕", "role": "网格员", "phone": "13800000001"}),
    "area": ("5118020010011", "桐梓林一片区",
             {"id": "ar-0001", "name": "梁雅琴", "role": "片区长", "phone": "13900000004"}),
    "community": ("511802001001", "桐梓林社区",
                  {"id": "cm-0001", "name": "胡涛", "role": "社区党委书记",
                   "phone": "13900000003"}),
    "street": ("511802001", "青江街道",
               {"id": "st-0001", "name": "黄国平", "role": "街道网格化服务管理中心主任",
                "phone": "13900000002"}),
    "district": ("511802", "雨城区",
                 {"id": "dc-0001", "name": "张建国", "role": "区网格化服务管理中心主任",
                  "phone": "13900000001"}),
}


def bj(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    """A Beijing wall-clock time in 2026, as UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=BEIJING).astimezone(UTC)


def snapshot(code: str, severity: str = "normal", grid: GridRegistry | None = None) -> dict:
    cat = REF.catalogue.get(code)
    assert cat is not None, code
    return REF.policy.snapshot(cat, severity, grid or REF.grid)


def tier(name: str, role: str) -> dict[str, Any]:
    code, node, owner = OWNERS[name]
    return {"tier": name, "code": code, "name": node, "owner": owner, "role": role}


def cell(code: str = TONGGONG, grid: GridRegistry | None = None):
    node, _ = (grid or REF.grid).cell_for_code(code)
    return node


def climb(snap: dict[str, Any], kind: str, now: datetime = T0) -> list[tuple[str, str, int]]:
    """Fire one clock again and again until it is exhausted: (action, tier, repeats)."""
    step, repeats, seen = 0, 0, []
    for _ in range(50):
        o = on_due(kind, step, repeats, snap, CAL, now)
        seen.append((o.action, tier_of(snap, o.step), o.repeats))
        if o.action == EXHAUST:
            return seen
        step, repeats = o.step, o.repeats
    raise AssertionError(f"never exhausted: {seen}")


# -- the clocks of a routed case --------------------------------------------------------------


def test_every_assignment_gets_a_report_in_and_a_resolve_clock():
    due_in, due_res = T0 + timedelta(minutes=30), bj(23, 15)
    plans = plans_for(
        [
            {"department": "fire", "role": "lead", "report_in_due": due_in,
             "resolve_due": due_res},
            {"department": "police", "role": "assist", "report_in_due": due_in,
             "resolve_due": due_res},
        ],
        2,
        {REPORT_IN: False, RESOLVE: True},
    )
    assert plans == [
        ClockPlan("fire", "lead", REPORT_IN, due_in, 2, False),
        ClockPlan("fire", "lead", RESOLVE, due_res, 2, True),
        ClockPlan("police", "assist", REPORT_IN, due_in, 2, False),
        ClockPlan("police", "assist", RESOLVE, due_res, 2, True),
    ]


def test_no_assignments_no_clocks():
    assert plans_for([], 0, {REPORT_IN: False, RESOLVE: False}) == []


def test_clocks_of_a_real_routing_use_its_deadlines():
    routed = route_with(REF, {"category": "E0402", "location": {"grid_code": TONGGONG}}, T0)
    first = routed["policy"]["steps"][0]
    working = working_units(first["report_in"], first["resolve"])
    plans = plans_for(routed["assignments"], 0, working)
    assert [(p.department, p.role, p.kind, p.due_at, p.step, p.working) for p in plans] == [
        (d, role, kind, due, 0, kind == RESOLVE)
        for d, role in (("fire", "lead"), ("police", "assist"), ("urban_mgmt", "assist"))
        for kind, due in ((REPORT_IN, bj(23, 9, 30)), (RESOLVE, bj(23, 15)))
    ]


@pytest.mark.parametrize(
    ("report_in", "resolve", "expected"),
    [
        ("30m", "4wh", {REPORT_IN: False, RESOLVE: True}),
        ("4wh", "2wd", {REPORT_IN: True, RESOLVE: True}),
        ("15m", "2h", {REPORT_IN: False, RESOLVE: False}),
        ("1h", "1d", {REPORT_IN: False, RESOLVE: False}),
    ],
)
def test_working_units(report_in, resolve, expected):
    assert working_units(report_in, resolve) == expected


def test_working_units_refuses_a_bad_duration():
    with pytest.raises(ValueError, match="duration 'soon'"):
        working_units("soon", "4wh")


def test_a_new_clock_runs():
    assert state_on_arrival(None) == RUNNING


def test_a_running_clock_that_is_planned_again_keeps_running():
    assert state_on_arrival(RUNNING) == RUNNING


def test_a_stop_that_came_before_the_clock_wins():
    assert state_on_arrival(STOPPED) == STOPPED


def test_clock_state_and_action_names():
    assert (RUNNING, STOPPED, PAUSED, EXHAUSTED) == ("running", "stopped", "paused", "exhausted")
    assert (REMIND, ESCALATE, EXHAUST) == ("remind", "escalate", "exhaust")
    assert clocks.KINDS == (REPORT_IN, RESOLVE) == ("report_in", "resolve")
    assert clocks.REASONS == {REPORT_IN: "report_in_missed", RESOLVE: "resolve_missed"}


def test_acknowledge_stops_only_the_report_in_clock_and_resolve_or_return_stops_both():
    assert STOPS == {
        "assignment.acknowledged": (REPORT_IN,),
        "assignment.resolved": (REPORT_IN, RESOLVE),
        "assignment.returned": (REPORT_IN, RESOLVE),
    }


def test_the_follow_up_clock_is_a_kind_of_its_own_without_a_department():
    assert (FOLLOW_UP, FOLLOW_UP_DEPARTMENT) == ("follow_up", "")
    # not a policy clock: nothing missed on it reminds or escalates
    assert FOLLOW_UP not in clocks.KINDS
    assert FOLLOW_UP not in clocks.REASONS
    assert all(FOLLOW_UP not in kinds for kinds in (*STOPS.values(), *CLOSES.values()))


def test_stopping_events_are_internal_events_escalation_subscribes_to():
    assert set(STOPS) <= set(INTERNAL)
    assert set(STOPS) <= set(SUBSCRIPTIONS["escalation"])


# -- a clock falls due ----------------------------------------------------------------------------


def test_a_step_with_repeats_left_reminds_with_a_fresh_deadline_on_the_calendar():
    friday_five = bj(27, 17)
    # 2wh from Friday 17:00: half an hour on Friday, one and a half on Monday
    assert on_due(RESOLVE, 0, 0, HAND, CAL, friday_five) == Outcome(
        REMIND, 0, 1, bj(30, 10), True
    )
    assert on_due(RESOLVE, 0, 1, HAND, CAL, friday_five) == Outcome(
        REMIND, 0, 2, bj(30, 10), True
    )
    # the report-in clock counts natural time
    assert on_due(REPORT_IN, 0, 0, HAND, CAL, friday_five) == Outcome(
        REMIND, 0, 1, bj(27, 18), False
    )


def test_repeats_used_up_escalate_with_the_next_steps_deadline():
    # 1wd from Friday 17:00: half an hour on Friday, six and a half on Monday
    assert on_due(RESOLVE, 0, 2, HAND, CAL, bj(27, 17)) == Outcome(
        ESCALATE, 1, 0, bj(30, 17), True
    )
    assert on_due(REPORT_IN, 0, 2, HAND, CAL, bj(27, 17)) == Outcome(
        ESCALATE, 1, 0, bj(27, 19), False
    )


def test_at_the_top_with_no_repeats_the_clock_is_exhausted():
    assert on_due(RESOLVE, 1, 0, HAND, CAL, bj(27, 17)) == Outcome(EXHAUST, 1, 0, None, False)
    assert on_due(REPORT_IN, 1, 0, HAND, CAL, bj(27, 17)) == Outcome(EXHAUST, 1, 0, None, False)


def test_the_standard_policy_from_a_compound():
    snap = snapshot("E0101")  # 暴露垃圾: compound, standard
    # compound (no repeats) → area, with the area's 4wh: Mon 09:00 + 4wh = Mon 15:00
    assert on_due(RESOLVE, 0, 0, snap, CAL, T0) == Outcome(ESCALATE, 1, 0, bj(23, 15), True)
    assert on_due(REPORT_IN, 0, 0, snap, CAL, T0) == Outcome(
        ESCALATE, 1, 0, bj(23, 9, 30), False
    )
    # area → community, 1wd: Tue 09:00
    assert on_due(RESOLVE, 1, 0, snap, CAL, T0) == Outcome(ESCALATE, 2, 0, bj(24, 9), True)
    # the community repeats once, with its own 1wd
    assert on_due(RESOLVE, 2, 0, snap, CAL, T0) == Outcome(REMIND, 2, 1, bj(24, 9), True)
    # then the street: report-in 1h, resolve 2wd
    assert on_due(REPORT_IN, 2, 1, snap, CAL, T0) == Outcome(ESCALATE, 3, 0, bj(23, 10), False)
    assert on_due(RESOLVE, 2, 1, snap, CAL, T0) == Outcome(ESCALATE, 3, 0, bj(25, 9), True)
    # the district repeats three times (3wd), then the clock stops
    assert on_due(RESOLVE, 4, 2, snap, CAL, T0) == Outcome(REMIND, 4, 3, bj(26, 9), True)
    assert on_due(RESOLVE, 4, 3, snap, CAL, T0) == Outcome(EXHAUST, 4, 3, None, False)


def test_a_clock_climbs_the_standard_policy_to_the_top_then_stops():
    assert climb(snapshot("E0101"), RESOLVE) == [
        (ESCALATE, "area", 0),
        (ESCALATE, "community", 0),
        (REMIND, "community", 1),
        (ESCALATE, "street", 0),
        (REMIND, "street", 1),
        (REMIND, "street", 2),
        (ESCALATE, "district", 0),
        (REMIND, "district", 1),
        (REMIND, "district", 2),
        (REMIND, "district", 3),
        (EXHAUST, "district", 3),
    ]


def test_an_urgent_safety_case_climbs_from_the_community():
    snap = snapshot("E0402")  # 消防通道堵塞: community, urgent_safety
    assert climb(snap, REPORT_IN) == [
        (ESCALATE, "street", 0),
        (REMIND, "street", 1),
        (ESCALATE, "district", 0),
        (REMIND, "district", 1),
        (REMIND, "district", 2),
        (REMIND, "district", 3),
        (EXHAUST, "district", 3),
    ]
    # urgent_safety counts natural hours: a missed resolve at Friday 17:00 is due at 19:00
    assert on_due(RESOLVE, 0, 0, snap, CAL, bj(27, 17)) == Outcome(
        ESCALATE, 1, 0, bj(27, 19), False
    )


def test_a_four_level_grid_goes_from_compound_straight_to_community():
    snap = snapshot("E0101", grid=GRID4)
    assert on_due(RESOLVE, 0, 0, snap, CAL, T0) == Outcome(ESCALATE, 1, 0, bj(24, 9), True)
    assert tier_of(snap, 1) == "community"
    assert [t for _, t, _ in climb(snap, REPORT_IN)] == [
        "community", "community", "street", "street", "street",
        "district", "district", "district", "district", "district",
    ]


# -- restart, pause, extension ------------------------------------------------------------------


def test_a_reopened_clock_restarts_at_the_first_step():
    snap = snapshot("E0101")
    assert restart_plan(RESOLVE, snap, CAL, T0) == (bj(23, 15), True)
    assert restart_plan(REPORT_IN, snap, CAL, T0) == (bj(23, 9, 30), False)
    # the first step has the category's deadlines: 路灯 2wd from Monday 09:00 is Wednesday 09:00
    assert restart_plan(RESOLVE, snapshot("C0101"), CAL, T0) == (bj(25, 9), True)
    assert restart_plan(REPORT_IN, HAND, CAL, bj(27, 17)) == (bj(27, 18), False)


def test_a_working_clock_keeps_its_working_time_over_a_weekend_pause():
    paused, resumed = bj(27, 16), bj(30, 9)  # Friday 16:00, Monday 09:00
    due = bj(30, 9)  # two working hours after Friday 16:00
    left = remaining(due, True, CAL, paused)
    assert left == timedelta(hours=2)
    assert resumed_due(left, True, CAL, resumed) == bj(30, 11)


def test_a_natural_clock_keeps_its_natural_time_over_a_weekend_pause():
    paused, resumed = bj(27, 16), bj(30, 9)
    left = remaining(bj(27, 18), False, CAL, paused)
    assert left == timedelta(hours=2)
    assert resumed_due(left, False, CAL, resumed) == bj(30, 11)
    # the same instant as a working clock would keep far less: the weekend is not counted
    assert remaining(bj(30, 9), False, CAL, paused) == timedelta(hours=65)


def test_working_remainder_skips_lunch_and_the_evening():
    left = remaining(bj(23, 15), True, CAL, bj(23, 11))  # 11–12 and 14–15
    assert left == timedelta(hours=2)
    assert resumed_due(left, True, CAL, bj(24, 16, 30)) == bj(25, 9, 30)


def test_a_working_clock_resumed_before_a_holiday_waits_for_the_next_workday():
    # National Day: 1–7 October 2026 are holidays
    assert resumed_due(timedelta(hours=2), True, CAL, bj(30, 17, month=9)) == bj(
        8, 10, month=10
    )


def test_a_clock_paused_after_its_deadline_keeps_nothing():
    for working in (True, False):
        assert remaining(T0, working, CAL, T0 + timedelta(hours=1)) == timedelta(0)
        assert resumed_due(timedelta(0), working, CAL, bj(30, 9)) == bj(30, 9)


def test_an_extension_counts_from_the_old_deadline():
    assert extended_due(bj(23, 15), "4wh", CAL, T0) == bj(24, 10)
    assert extended_due(bj(23, 15), "1d", CAL, T0) == bj(24, 15)
    assert extended_due(bj(27, 17), "2wd", CAL, T0) == bj(1, 17, month=12)


def test_an_extension_counts_from_now_once_the_deadline_passed():
    assert extended_due(bj(23, 10), "4wh", CAL, bj(23, 16)) == bj(24, 11)
    assert extended_due(bj(23, 10), "2h", CAL, bj(23, 16)) == bj(23, 18)


def test_an_extended_deadline_is_utc():
    assert extended_due(bj(23, 15), "4wh", CAL, T0).tzinfo is UTC


@pytest.mark.parametrize(
    ("due", "working", "extend_by"),
    [
        (bj(23, 11), True, "1d"),  # a working clock, a natural extension
        (bj(23, 11), False, "2wd"),  # a natural clock, a working extension
        (bj(23, 11), True, "1wd"),
        (bj(23, 11), False, "2h"),
    ],
)
def test_an_extension_while_paused_gives_what_it_gives_a_running_clock(due, working, extend_by):
    """Paused and resumed at the same instant, a clock ends where it would had it run on."""
    running = extended_due(due, extend_by, CAL, T0)
    left = extended_remaining(remaining(due, working, CAL, T0), working, extend_by, CAL, T0)
    assert resumed_due(left, working, CAL, T0) == running


def test_an_extension_while_paused_adds_nothing_to_the_pause_itself():
    """Resumed a day later, the extended clock ends a day later than it would have run."""
    left = extended_remaining(timedelta(hours=2), True, "1wd", CAL, T0)
    assert left == timedelta(hours=9)  # 2 working hours + one 7-hour working day


# -- the case's step and who is told ------------------------------------------------------------


def test_the_case_moves_to_the_highest_step_an_escalation_reached():
    outcomes = [
        Outcome(REMIND, 1, 1, T0, False),
        Outcome(ESCALATE, 3, 0, T0, True),
        Outcome(ESCALATE, 2, 0, T0, False),
    ]
    assert case_step_after(1, outcomes) == 3


def test_reminders_and_exhausted_clocks_leave_the_case_where_it_is():
    outcomes = [Outcome(REMIND, 4, 1, T0, False), Outcome(EXHAUST, 4, 3, None, False)]
    assert case_step_after(2, outcomes) == 2
    assert case_step_after(2, []) == 2


def test_a_lagging_clock_does_not_move_the_case_down():
    assert case_step_after(3, [Outcome(ESCALATE, 2, 0, T0, False)]) == 3


def test_tier_of():
    snap = snapshot("E0402")
    assert [tier_of(snap, i) for i in range(3)] == ["community", "street", "district"]
    assert tier_of(HAND, 1) == "district"


def test_recipients_of_a_community_step_with_supervisors():
    assert recipients(grid=REF.grid, cell=cell(), snapshot=snapshot("E0402"), step=0,
                      departments=["urban_mgmt", "fire", "police", "fire"]) == {
        "departments": ["fire", "police", "urban_mgmt"],
        "tiers": [tier("community", "owner"), tier("street", "supervisor")],
    }


def test_the_supervisor_of_a_compound_is_its_area():
    got = recipients(grid=REF.grid, cell=cell(), snapshot=snapshot("E0801", "urgent"), step=0,
                     departments=["civil_affairs"])
    assert got["tiers"] == [tier("compound", "owner"), tier("area", "supervisor")]


def test_a_step_without_supervisors_tells_the_owner_only():
    snap = snapshot("E0101")
    assert recipients(grid=REF.grid, cell=cell(), snapshot=snap, step=0,
                      departments=["sanitation"]) == {
        "departments": ["sanitation"],
        "tiers": [tier("compound", "owner")],
    }
    assert recipients(grid=REF.grid, cell=cell(), snapshot=snap, step=4,
                      departments=["sanitation"])["tiers"] == [tier("district", "owner")]


def test_there_is_no_supervisor_above_the_top():
    assert recipients(grid=REF.grid, cell=cell(), snapshot=HAND, step=1,
                      departments=["police", "fire"]) == {
        "departments": ["fire", "police"],
        "tiers": [],
    }


def test_a_step_that_does_not_notify_departments_names_none():
    assert recipients(grid=REF.grid, cell=cell(), snapshot=HAND, step=0,
                      departments=["fire"]) == {
        "departments": [],
        "tiers": [tier("community", "owner")],
    }


def test_recipients_in_another_branch_of_the_grid():
    got = recipients(grid=REF.grid, cell=cell("511802003001202"), snapshot=snapshot("E0402"),
                     step=0, departments=[])
    assert [(t["tier"], t["code"], t["name"], t["owner"]["name"], t["role"])
            for t in got["tiers"]] == [
        ("community", "511802003001", "沙湾社区", "龚志强", "owner"),
        ("street", "511802003", "东城街道", "史学文", "supervisor"),
    ]


def test_on_a_four_level_grid_the_supervisor_of_a_compound_is_its_community():
    snap = snapshot("E0801", "urgent", grid=GRID4)
    got = recipients(grid=GRID4, cell=cell(TONGGONG4, GRID4), snapshot=snap, step=0,
                     departments=["civil_affairs"])
    assert got == {
        "departments": ["civil_affairs"],
        "tiers": [
            {"tier": "compound", "code": TONGGONG4, "name": "通工小区",
             "owner": {"id": "", "name": "网格员甲", "role": "网格员", "phone": ""},
             "role": "owner"},
            {"tier": "community", "code": "511802001001", "name": "桐梓林社区",
             "owner": {"id": "", "name": "社区书记", "role": "社区党委书记", "phone": ""},
             "role": "supervisor"},
        ],
    }


# -- what the events say ------------------------------------------------------------------------


def test_missed_list_includes_the_fresh_deadline():
    due = T0 + timedelta(minutes=30)
    missed = [Missed("police", REPORT_IN, due, bj(23, 10)), Missed("fire", RESOLVE, due)]
    assert missed_list(missed) == [
        {"department": "police", "clock": "report_in", "due_at": due, "next_due": bj(23, 10)},
        {"department": "fire", "clock": "resolve", "due_at": due, "next_due": None},
    ]
    assert missed_list([]) == []


def test_a_missed_resolve_wins_over_a_missed_report_in():
    missed = [Missed("police", REPORT_IN, T0), Missed("fire", RESOLVE, T0)]
    assert reason_for(missed) == "resolve_missed"
    assert reason_for(list(reversed(missed))) == "resolve_missed"


def test_only_report_ins_missed_is_report_in_missed():
    assert reason_for([Missed("fire", REPORT_IN, T0), Missed("police", REPORT_IN, T0)]) == (
        "report_in_missed"
    )


# -- the ledger ---------------------------------------------------------------------------------


def test_what_closes_a_ledger_item():
    assert CLOSES == {
        "assignment.acknowledged": (REPORT_IN,),
        "assignment.resolved": (REPORT_IN, RESOLVE),
        "extension.approved": (RESOLVE,),
        "assignment.returned": (REPORT_IN, RESOLVE),
    }
    assert CLOSE_REASONS == {
        "assignment.acknowledged": "reported in",
        "assignment.resolved": "resolved",
        "extension.approved": "extension approved",
        "assignment.returned": "returned (退单)",
    }


def test_every_ledger_closing_has_its_reason():
    assert set(CLOSE_REASONS) == set(CLOSES)


def test_every_stop_also_closes_the_same_ledger_items():
    for event, kinds in STOPS.items():
        assert CLOSES[event] == kinds


def test_history_entry():
    assert history_entry(ESCALATE, at=bj(23, 10), from_tier="community", to_tier="street",
                         due_at=bj(23, 9, 30), next_due=bj(23, 11)) == {
        "at": "2026-11-23T02:00:00+00:00",
        "action": "escalate",
        "from_tier": "community",
        "to_tier": "street",
        "missed_due": "2026-11-23T01:30:00+00:00",
        "next_due": "2026-11-23T03:00:00+00:00",
    }


def test_history_entry_of_an_exhausted_clock_has_no_next_due():
    entry = history_entry(EXHAUST, at=T0, from_tier="district", to_tier="district",
                          due_at=T0 - timedelta(hours=1), next_due=None)
    assert entry["next_due"] is None
    assert entry["missed_due"] == "2026-11-23T00:00:00+00:00"
    assert (entry["action"], entry["from_tier"], entry["to_tier"]) == (
        "exhaust", "district", "district"
    )


def test_late_by():
    assert late_by(T0, T0 + timedelta(minutes=95)) == timedelta(minutes=95)
    assert late_by(T0, T0) == timedelta(0)
    assert late_by(T0, T0 - timedelta(hours=1)) == timedelta(0)


def test_a_resumed_working_deadline_is_utc():
    assert resumed_due(timedelta(hours=2), True, CAL, T0).tzinfo is UTC
