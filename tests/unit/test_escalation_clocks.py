"""Escalation clocks: which clocks run, what stops them, and what a missed one escalates to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.escalation import clocks
from services.escalation.clocks import (
    FIRED,
    REPORT_IN,
    RESOLVE,
    RUNNING,
    STOPPED,
    STOPS,
    ClockPlan,
    Missed,
    clocks_for,
    escalation,
    state_on_arrival,
)
from services.routing.rules import route
from shared.amqp.topology import SUBSCRIPTIONS
from shared.events import INTERNAL, make_event
from shared.grid import GridError, GridRegistry
from shared.reference import load_reference
from support import four_level_grid

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
TONGGONG = "511802001001101"  # 通工小区
TONGGONG_1 = "511802001001101001"  # 通工小区 1栋


def grid() -> GridRegistry:
    return load_reference(DEMO).grid


def escalate(
    tier: str,
    missed: list[Missed] | None = None,
    departments_open: tuple[str, ...] = (),
    grid_code: str = TONGGONG,
    registry: GridRegistry | None = None,
) -> dict:
    return escalation(
        grid=registry or grid(),
        grid_code=grid_code,
        tier=tier,
        missed=missed or [Missed("fire", REPORT_IN, T0)],
        departments_open=departments_open,
        at=T0 + timedelta(minutes=31),
    )


# -- the clocks of a routed case --------------------------------------------------------------


def test_every_assignment_gets_a_report_in_and_a_resolve_clock():
    due_in, due_res = T0 + timedelta(minutes=30), T0 + timedelta(hours=6)
    plans = clocks_for(
        [
            {"department": "fire", "role": "lead", "report_in_due": due_in, "resolve_due": due_res},
            {
                "department": "police",
                "role": "assist",
                "report_in_due": due_in,
                "resolve_due": due_res,
            },
        ]
    )
    assert plans == [
        ClockPlan("fire", "lead", REPORT_IN, due_in),
        ClockPlan("fire", "lead", RESOLVE, due_res),
        ClockPlan("police", "assist", REPORT_IN, due_in),
        ClockPlan("police", "assist", RESOLVE, due_res),
    ]


def test_no_assignments_no_clocks():
    assert clocks_for([]) == []


def test_clocks_of_a_real_routing_use_its_deadlines():
    ref = load_reference(DEMO)
    case = {"category": "E0402", "location": {"grid_code": TONGGONG}}
    routed = route(case, catalogue=ref.catalogue, grid=ref.grid, calendar=ref.calendar, at=T0)
    plans = clocks_for(routed["assignments"])
    assert len(plans) == 6
    assert {(p.department, p.kind) for p in plans} == {
        (d, k) for d in ("fire", "police", "urban_mgmt") for k in (REPORT_IN, RESOLVE)
    }
    fire_resolve = next(p for p in plans if (p.department, p.kind) == ("fire", RESOLVE))
    assert fire_resolve.due_at == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # 15:00 Beijing


def test_a_new_clock_runs():
    assert state_on_arrival(None) == RUNNING


def test_a_running_clock_that_is_routed_again_keeps_running():
    assert state_on_arrival(RUNNING) == RUNNING


def test_a_stop_that_came_before_the_clock_wins():
    assert state_on_arrival(STOPPED) == STOPPED


def test_clock_state_names():
    assert (RUNNING, STOPPED, FIRED) == ("running", "stopped", "fired")
    assert clocks.REASONS == {REPORT_IN: "report_in_missed", RESOLVE: "resolve_missed"}


def test_acknowledge_stops_only_the_report_in_clock():
    assert STOPS["assignment.acknowledged"] == (REPORT_IN,)


def test_resolve_stops_both_clocks():
    assert set(STOPS["assignment.resolved"]) == {REPORT_IN, RESOLVE}


def test_stopping_events_are_internal_events_escalation_subscribes_to():
    assert set(STOPS) <= set(INTERNAL)
    assert set(STOPS) <= set(SUBSCRIPTIONS["escalation"])


# -- one tier up --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_tier", "to_tier", "code", "owner"),
    [
        ("compound", "area", "5118020010011", "梁雅琴"),
        ("area", "community", "511802001001", "胡涛"),
        ("community", "street", "511802001", "黄国平"),
        ("street", "district", "511802", "张建国"),
    ],
)
def test_a_missed_clock_moves_the_case_one_tier_up(from_tier, to_tier, code, owner):
    payload = escalate(from_tier)
    assert payload["from_tier"]["tier"] == from_tier
    assert payload["to_tier"]["tier"] == to_tier
    assert payload["to_tier"]["code"] == code
    assert payload["to_tier"]["owner"]["name"] == owner
    assert payload["reason"] == "report_in_missed"


def test_from_tier_is_the_node_the_case_was_at():
    payload = escalate("compound")
    assert payload["from_tier"] == {
        "tier": "compound",
        "code": "511802001001101",
        "name": "通工小区",
        "owner": {"id": "gw-0001", "name": "邓海燕", "role": "网格员", "phone": "13800000001"},
    }


def test_repeated_escalation_climbs_the_whole_grid_then_stays():
    tier, seen = "compound", ["compound"]
    for _ in range(6):
        tier = escalate(tier)["to_tier"]["tier"]
        seen.append(tier)
    assert seen == ["compound", "area", "community", "street", "district", "district", "district"]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [(REPORT_IN, "report_in_missed_at_top_tier"), (RESOLVE, "resolve_missed_at_top_tier")],
)
def test_at_the_top_the_case_stays_and_the_reason_says_so(kind, reason):
    payload = escalate("district", [Missed("fire", kind, T0)])
    assert payload["from_tier"]["code"] == payload["to_tier"]["code"] == "511802"
    assert payload["to_tier"]["tier"] == "district"
    assert payload["reason"] == reason


def test_other_cells_escalate_within_their_own_branch():
    payload = escalate("community", grid_code="511802003001202")  # 姚桥安置小区
    assert payload["from_tier"]["name"] == "沙湾社区"
    assert payload["to_tier"] == {
        "tier": "street",
        "code": "511802003",
        "name": "东城街道",
        "owner": {
            "id": "st-0003",
            "name": "史学文",
            "role": "街道网格化服务管理中心主任",
            "phone": "13900000016",
        },
    }


def test_a_building_code_escalates_as_its_cell():
    assert escalate("compound", grid_code=TONGGONG_1) == escalate("compound", grid_code=TONGGONG)


def test_unknown_grid_code_is_an_error():
    with pytest.raises(GridError, match="unknown grid code"):
        escalate("compound", grid_code="511802999999999")


FOUR_LEVEL = four_level_grid()


def test_a_grid_without_areas_goes_from_compound_straight_to_community():
    payload = escalate("compound", grid_code="511802001001001", registry=FOUR_LEVEL)
    assert payload["to_tier"]["tier"] == "community"
    assert payload["to_tier"]["owner"]["name"] == "社区书记"


# -- why, and who is told -----------------------------------------------------------------------


def test_resolve_missed_wins_over_report_in_missed():
    missed = [Missed("police", REPORT_IN, T0), Missed("fire", RESOLVE, T0 + timedelta(hours=6))]
    assert escalate("community", missed)["reason"] == "resolve_missed"


def test_only_report_in_clocks_missed_is_report_in_missed():
    missed = [Missed("fire", REPORT_IN, T0), Missed("police", REPORT_IN, T0)]
    assert escalate("community", missed)["reason"] == "report_in_missed"


def test_missed_clocks_are_listed_as_they_fired():
    due = T0 + timedelta(minutes=30)
    missed = [Missed("police", REPORT_IN, due), Missed("fire", RESOLVE, due)]
    assert escalate("community", missed)["missed"] == [
        {"department": "police", "clock": "report_in", "due_at": due},
        {"department": "fire", "clock": "resolve", "due_at": due},
    ]


def test_notify_is_missed_and_open_departments_sorted_without_duplicates():
    missed = [Missed("urban_mgmt", REPORT_IN, T0), Missed("fire", REPORT_IN, T0)]
    payload = escalate("community", missed, departments_open=("police", "fire", "police"))
    assert payload["notify"] == ["fire", "police", "urban_mgmt"]


def test_notify_includes_a_department_that_missed_although_it_is_no_longer_open():
    payload = escalate("community", [Missed("sanitation", REPORT_IN, T0)], departments_open=())
    assert payload["notify"] == ["sanitation"]


def test_several_missed_clocks_of_one_department_notify_it_once():
    missed = [Missed("fire", REPORT_IN, T0), Missed("fire", RESOLVE, T0)]
    payload = escalate("community", missed, departments_open=("fire",))
    assert payload["notify"] == ["fire"]
    assert payload["to_tier"]["tier"] == "street"  # several clocks, still one tier


def test_escalated_at_is_the_time_given():
    assert escalate("compound")["escalated_at"] == T0 + timedelta(minutes=31)


def test_payload_is_a_valid_case_escalated_event():
    missed = [Missed("fire", REPORT_IN, T0), Missed("police", RESOLVE, T0)]
    payload = escalate("district", missed, departments_open=("urban_mgmt",))
    event = make_event("case.escalated", "c-1", payload, producer="escalation", at=T0)
    assert event.data["reason"] == "resolve_missed_at_top_tier"
    assert event.data["notify"] == ["fire", "police", "urban_mgmt"]
    assert event.data["missed"][1]["due_at"] == T0
