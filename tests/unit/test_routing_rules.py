"""Routing rules: category × cell → starting tier, lead and assisting departments, deadlines,
the case's policy snapshot; and the departments a whistle summons onto a routed case."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.routing.rules import (
    Assignment,
    Unroutable,
    plan_assignments,
    requested,
    reroute,
    route,
    route_with,
    summon,
)
from shared.calendar import Duration, WorkCalendar
from shared.catalogue import Catalogue
from shared.events import InvalidEvent, make_event
from shared.policy import PolicyBook
from shared.reference import ReferenceData, load_reference
from support import four_level_grid

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"

MONDAY_0900 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 in Asia/Shanghai
TONGGONG = "511802001001101"  # 通工小区 (compound = cell)
TONGGONG_1 = "511802001001101001"  # 通工小区 1栋


def ref() -> ReferenceData:
    return load_reference(DEMO)


def summary(category: str, grid_code: str = TONGGONG, **overrides: Any) -> dict[str, Any]:
    """A reported case summary as intake emits it on case.reported."""
    out: dict[str, Any] = {
        "category": category,
        "category_name": "",
        "description": "消防通道被私家车堵塞",
        "location": {
            "grid_code": grid_code,
            "grid_name": "通工小区",
            "building_code": None,
            "path": ["雨城区", "青江街道", "桐梓林社区", "桐梓林一片区", "通工小区"],
            "lat": None,
            "lng": None,
        },
        "reporter": {"kind": "grid_worker", "id": "gw-0001", "name": "邓海燕", "phone": ""},
        "media_urls": [],
        "occurred_at": None,
        "reported_at": MONDAY_0900,
    }
    out.update(overrides)
    return out


def route_demo(
    category: str, grid_code: str = TONGGONG, at: datetime = MONDAY_0900, **overrides: Any
) -> dict:
    r = ref()
    return route(
        summary(category, grid_code, **overrides),
        catalogue=r.catalogue,
        grid=r.grid,
        calendar=r.calendar,
        policies=r.policy,
        at=at,
    )


def sh(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    """A Beijing wall-clock time as the UTC instant the calendar returns."""
    return datetime(y, mo, d, h, mi, tzinfo=UTC) - timedelta(hours=8)


# -- departments and roles --------------------------------------------------------------------


def test_single_department_category_has_one_lead_assignment():
    routed = route_demo("E0101")  # 暴露垃圾: sanitation, no assist
    assert [(a["department"], a["role"]) for a in routed["assignments"]] == [("sanitation", "lead")]


def test_lead_comes_first_then_assists_in_catalogue_order():
    routed = route_demo("E0402")  # 消防通道堵塞: fire leads, police + urban_mgmt assist
    assert [(a["department"], a["role"]) for a in routed["assignments"]] == [
        ("fire", "lead"),
        ("police", "assist"),
        ("urban_mgmt", "assist"),
    ]


def test_every_assignment_carries_the_catalogue_durations_as_written():
    routed = route_demo("E0402")
    for a in routed["assignments"]:
        assert (a["report_in"], a["resolve"]) == ("30m", "4wh")


def test_plan_assignments_gives_every_department_the_same_clocks():
    departments = [("gas", "lead"), ("fire", "assist"), ("police", "assist")]
    plans = plan_assignments(
        departments, Duration.parse("15m"), Duration.parse("2h"), ref().calendar, MONDAY_0900
    )
    assert plans == [
        Assignment("gas", "lead", sh(2026, 11, 23, 9, 15), sh(2026, 11, 23, 11), "15m", "2h"),
        Assignment("fire", "assist", sh(2026, 11, 23, 9, 15), sh(2026, 11, 23, 11), "15m", "2h"),
        Assignment("police", "assist", sh(2026, 11, 23, 9, 15), sh(2026, 11, 23, 11), "15m", "2h"),
    ]


def test_plan_assignments_counts_working_durations_on_the_calendar():
    # 4wh from Monday 11:00: 11:00–12:00, then 14:00–17:00 after the lunch break.
    [plan] = plan_assignments(
        [("sanitation", "summoned")],
        Duration.parse("1h"),
        Duration.parse("4wh"),
        ref().calendar,
        sh(2026, 11, 23, 11),
    )
    assert plan == Assignment(
        "sanitation", "summoned", sh(2026, 11, 23, 12), sh(2026, 11, 23, 17), "1h", "4wh"
    )


def test_plan_assignments_of_nobody_is_empty():
    r = ref()
    assert (
        plan_assignments([], Duration.parse("1h"), Duration.parse("1d"), r.calendar, MONDAY_0900)
        == []
    )


def test_assignment_as_dict_has_exactly_the_event_fields():
    a = Assignment("fire", "lead", MONDAY_0900, MONDAY_0900 + timedelta(hours=1), "30m", "1h")
    assert a.as_dict() == {
        "department": "fire",
        "role": "lead",
        "report_in_due": MONDAY_0900,
        "resolve_due": MONDAY_0900 + timedelta(hours=1),
        "report_in": "30m",
        "resolve": "1h",
    }


# -- starting tier ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "tier", "code", "name", "owner"),
    [
        ("E0101", "compound", "511802001001101", "通工小区", "邓海燕"),  # 小事不出小区
        ("E0102", "area", "5118020010011", "桐梓林一片区", "梁雅琴"),  # 难事不出片区
        ("E0402", "community", "511802001001", "桐梓林社区", "胡涛"),  # 大事不出社区
        ("E0403", "street", "511802001", "青江街道", "黄国平"),  # 路面塌陷
    ],
)
def test_category_tier_picks_the_node_answering_for_the_cell(category, tier, code, name, owner):
    routed = route_demo(category)
    assert routed["tier"]["tier"] == tier
    assert routed["tier"]["code"] == code
    assert routed["tier"]["name"] == name
    assert routed["tier"]["owner"]["name"] == owner


def test_tier_owner_is_the_full_owner_record():
    routed = route_demo("E0402")
    assert routed["tier"]["owner"] == {
        "id": "cm-0001",
        "name": "胡涛",
        "role": "社区党委书记",
        "phone": "13900000003",
    }


def test_building_code_routes_like_its_cell():
    by_building = route_demo("E0102", TONGGONG_1)
    by_cell = route_demo("E0102", TONGGONG)
    assert by_building["tier"] == by_cell["tier"]
    assert by_building["assignments"] == by_cell["assignments"]


def test_another_cell_gets_its_own_tier_nodes():
    routed = route_demo("E0402", "511802002001101")  # 新安巷大院, 康藏路社区
    assert routed["tier"]["code"] == "511802002001"
    assert routed["tier"]["name"] == "康藏路社区"


def route_four_level(category: str) -> dict:
    r = ref()
    return route(
        summary(category, "511802001001001"),
        catalogue=r.catalogue,
        grid=four_level_grid(),
        calendar=r.calendar,
        policies=r.policy,
        at=MONDAY_0900,
    )


def test_area_tier_falls_to_community_in_a_grid_without_areas():
    routed = route_four_level("E0102")  # catalogue says 'area'
    assert routed["tier"]["tier"] == "community"
    assert routed["tier"]["code"] == "511802001001"
    assert routed["tier"]["owner"]["name"] == "社区书记"


@pytest.mark.parametrize(
    ("category", "tier", "code"),
    [("E0101", "compound", "511802001001001"), ("E0403", "street", "511802001")],
)
def test_tiers_the_four_level_grid_has_are_kept(category, tier, code):
    routed = route_four_level(category)
    assert (routed["tier"]["tier"], routed["tier"]["code"]) == (tier, code)


# -- deadlines -------------------------------------------------------------------------------


def test_natural_and_working_hour_deadlines_on_a_monday_morning():
    routed = route_demo("E0101")  # 30m report-in, 4wh resolve
    (a,) = routed["assignments"]
    assert a["report_in_due"] == sh(2026, 11, 23, 9, 30)
    # 09:00–12:00 is 3 h, the 4th working hour is 14:00–15:00 after the lunch break.
    assert a["resolve_due"] == sh(2026, 11, 23, 15, 0)


def test_deadlines_are_utc():
    (a,) = route_demo("E0101")["assignments"]
    assert a["report_in_due"].utcoffset() == timedelta(0)
    assert a["resolve_due"].utcoffset() == timedelta(0)


def test_working_hours_skip_the_weekend_but_natural_time_does_not():
    saturday_10 = sh(2026, 11, 28, 10)
    (a,) = route_demo("E0101", at=saturday_10)["assignments"]
    assert a["report_in_due"] == sh(2026, 11, 28, 10, 30)
    # Monday 08:30–12:00 is 3.5 h, the last half hour is 14:00–14:30.
    assert a["resolve_due"] == sh(2026, 11, 30, 14, 30)


def test_working_days_count_seven_hour_days():
    (a,) = route_demo("C0101")["assignments"]  # 路灯: 1h report-in, 2wd resolve
    assert a["report_in_due"] == sh(2026, 11, 23, 10)
    # 14 working hours from Mon 09:00: Mon 6.5 h, Tue 7 h, Wed 08:30–09:00.
    assert a["resolve_due"] == sh(2026, 11, 25, 9)


def test_natural_days_count_calendar_days():
    lead = route_demo("E0403")["assignments"][0]  # 路面塌陷: 30m / 1d
    assert lead["resolve_due"] == MONDAY_0900 + timedelta(days=1)


def test_working_hours_skip_the_national_day_holiday():
    eve = sh(2026, 9, 30, 17)  # Wednesday before 国庆节 (10-01 … 10-07)
    (a,) = route_demo("E0101", at=eve)["assignments"]
    # 17:00–17:30 on 09-30, then 3.5 h on Thursday 10-08.
    assert a["resolve_due"] == sh(2026, 10, 8, 12)


def test_deadlines_count_from_the_routing_time_not_the_report_time():
    later = MONDAY_0900 + timedelta(hours=1)
    (a,) = route_demo("E0101", at=later)["assignments"]
    assert a["report_in_due"] == later + timedelta(minutes=30)


def test_deadlines_follow_the_calendar_given():
    r = ref()
    seven_to_seven = WorkCalendar.from_dict({"working_hours": [["07:00", "19:00"]]})
    routed = route(
        summary("E0101"),
        catalogue=r.catalogue,
        grid=r.grid,
        calendar=seven_to_seven,
        policies=r.policy,
        at=MONDAY_0900,
    )
    assert routed["assignments"][0]["resolve_due"] == sh(2026, 11, 23, 13)


# -- the payload -----------------------------------------------------------------------------


def test_payload_carries_the_case_catalogue_version_and_time():
    case = summary("E0402")
    r = ref()
    routed = route(
        case,
        catalogue=r.catalogue,
        grid=r.grid,
        calendar=r.calendar,
        policies=r.policy,
        at=MONDAY_0900,
    )
    assert routed["case"] == case
    assert routed["catalogue_version"] == "2026.1"
    assert routed["routed_at"] == MONDAY_0900
    assert routed["policy"] == r.policy.snapshot(r.catalogue.get("E0402"), "normal", r.grid)
    assert set(routed) == {
        "case",
        "tier",
        "assignments",
        "policy",
        "catalogue_version",
        "routed_at",
    }


def test_route_with_takes_every_part_from_the_reference_data():
    case = summary("E0403")
    assert route_with(ref(), case, MONDAY_0900) == route_demo("E0403")


@pytest.mark.parametrize("category", ["E0101", "E0102", "E0402", "E0403", "C0101"])
def test_payload_is_a_valid_case_routed_event(category):
    routed = route_demo(category)
    event = make_event("case.routed", "20261123-000001", routed, producer="routing", at=MONDAY_0900)
    assert event.data["tier"]["tier"] == routed["tier"]["tier"]
    assert [a["department"] for a in event.data["assignments"]] == [
        a["department"] for a in routed["assignments"]
    ]
    assert event.data["assignments"][0]["resolve_due"] == routed["assignments"][0]["resolve_due"]
    assert event.data["policy"]["start"] == routed["tier"]["tier"]
    assert event.data["policy"]["steps"] == routed["policy"]["steps"]


def test_every_demo_category_routes_to_a_valid_event():
    r = ref()
    for code in r.catalogue.categories:
        for severity in ("normal", "urgent"):
            routed = route_demo(code, severity=severity)
            make_event("case.routed", "c-1", routed, producer="routing", at=MONDAY_0900)
            assert routed["assignments"][0]["department"] == r.catalogue.get(code).lead
            assert routed["policy"]["severity"] == severity


# -- the policy snapshot ---------------------------------------------------------------------


def steps_of(routed: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """The snapshot's steps as (tier, report_in, resolve, repeat)."""
    return [
        (s["tier"], s["report_in"], s["resolve"], s["repeat"]) for s in routed["policy"]["steps"]
    ]


def deadlines(routed: dict[str, Any]) -> set[tuple[datetime, datetime]]:
    return {(a["report_in_due"], a["resolve_due"]) for a in routed["assignments"]}


def test_a_category_without_a_policy_follows_the_default_one_from_its_own_tier():
    routed = route_demo("C0101")  # 路灯: not listed in policy.yaml, compound, 1h / 2wd
    policy = routed["policy"]
    assert (policy["name"], policy["version"], policy["severity"], policy["start"]) == (
        "standard",
        "2026.1",
        "normal",
        "compound",
    )
    assert steps_of(routed) == [
        ("compound", "1h", "2wd", 0),  # the catalogue's deadlines, not the policy's 30m / 4wh
        ("area", "30m", "4wh", 0),
        ("community", "30m", "1wd", 1),
        ("street", "1h", "2wd", 2),
        ("district", "1h", "3wd", 3),
    ]
    assert routed["policy"]["steps"][2]["notify"] == ["departments", "tier_owner", "supervisors"]


def test_the_snapshot_starts_at_the_categorys_tier():
    routed = route_demo("E0402")  # 消防通道堵塞 starts at the community
    assert routed["policy"]["start"] == routed["tier"]["tier"] == "community"
    assert [s[0] for s in steps_of(routed)] == ["community", "street", "district"]


def test_the_first_steps_deadlines_are_the_assignments_deadlines():
    routed = route_demo("C0101")
    first = routed["policy"]["steps"][0]
    assert {(a["report_in"], a["resolve"]) for a in routed["assignments"]} == {
        (first["report_in"], first["resolve"])
    }


def test_the_snapshot_carries_the_whistle_terms():
    assert route_demo("E0101")["policy"]["whistle"] == {
        "routine": {"level": "routine", "report_in": "30m", "resolve": "1wd", "raise_to": None},
        "hard": {"level": "hard", "report_in": "30m", "resolve": "1wd", "raise_to": "district"},
    }


def test_gas_leak_follows_urgent_safety_but_keeps_the_catalogue_deadlines_first():
    routed = route_demo("E0401")  # 燃气泄漏: its own rule, urgent_safety; 15m / 2h in the catalogue
    assert (routed["policy"]["name"], routed["policy"]["severity"]) == ("urgent_safety", "normal")
    assert steps_of(routed) == [
        ("community", "15m", "2h", 0),  # catalogue deadlines, the policy's repeat
        ("street", "15m", "2h", 1),
        ("district", "15m", "2h", 3),
    ]
    assert routed["policy"]["steps"][0]["notify"] == ["departments", "tier_owner", "supervisors"]
    assert deadlines(routed) == {(sh(2026, 11, 23, 9, 15), sh(2026, 11, 23, 11))}


def test_a_dispute_follows_the_patient_policy():
    routed = route_demo("E0701")  # 邻里纠纷: patient; 2h / 3wd in the catalogue
    assert routed["policy"]["name"] == "patient"
    assert steps_of(routed)[:2] == [("compound", "2h", "3wd", 2), ("area", "2h", "2wd", 1)]


def test_urgent_severity_chooses_urgent_safety_with_its_own_shorter_deadlines():
    normal = route_demo("E0101")  # 暴露垃圾: standard, 30m / 4wh
    urgent = route_demo("E0101", severity="urgent")
    assert (urgent["policy"]["name"], urgent["policy"]["severity"]) == ("urgent_safety", "urgent")
    assert steps_of(urgent)[0] == ("compound", "10m", "1h", 0)
    assert deadlines(urgent) == {(sh(2026, 11, 23, 9, 10), sh(2026, 11, 23, 10))}
    assert deadlines(normal) == {(sh(2026, 11, 23, 9, 30), sh(2026, 11, 23, 15))}
    assert {(a["report_in"], a["resolve"]) for a in urgent["assignments"]} == {("10m", "1h")}


def test_urgent_keeps_the_categorys_tier_and_departments():
    normal, urgent = route_demo("E0402"), route_demo("E0402", severity="urgent")
    assert urgent["tier"] == normal["tier"]
    assert [(a["department"], a["role"]) for a in urgent["assignments"]] == [
        (a["department"], a["role"]) for a in normal["assignments"]
    ]


def test_urgent_gas_leak_is_shorter_than_its_catalogue_deadlines():
    # E0401 has no urgent rule of its own: the policy file's `severity: urgent` applies.
    routed = route_demo("E0401", severity="urgent")
    assert routed["policy"]["name"] == "urgent_safety"
    assert steps_of(routed)[0] == ("community", "10m", "1h", 0)
    assert deadlines(routed) == {(sh(2026, 11, 23, 9, 10), sh(2026, 11, 23, 10))}


def test_a_categorys_own_urgent_rule_applies_to_urgent_reports_only():
    normal = route_demo("E0801")  # 独居老人照护: patient, urgent → urgent_safety
    urgent = route_demo("E0801", severity="urgent")
    assert (normal["policy"]["name"], steps_of(normal)[0]) == (
        "patient",
        ("compound", "1h", "1wd", 2),
    )
    assert (urgent["policy"]["name"], steps_of(urgent)[0]) == (
        "urgent_safety",
        ("compound", "10m", "1h", 0),
    )


def test_urgent_deadlines_count_natural_time_over_the_weekend():
    saturday_10 = sh(2026, 11, 28, 10)
    urgent = route_demo("E0101", at=saturday_10, severity="urgent")
    assert deadlines(urgent) == {(sh(2026, 11, 28, 10, 10), sh(2026, 11, 28, 11))}


def test_a_street_category_reported_urgent_starts_at_the_street():
    routed = route_demo("E0403", severity="urgent")  # 路面塌陷
    assert routed["policy"]["start"] == "street"
    assert steps_of(routed) == [("street", "15m", "2h", 1), ("district", "15m", "2h", 3)]


def test_the_four_level_grid_snapshot_leaves_out_the_area():
    assert [s[0] for s in steps_of(route_four_level("E0101"))] == [
        "compound",
        "community",
        "street",
        "district",
    ]
    routed = route_four_level("E0102")  # catalogue 'area', 30m / 4wh
    assert routed["policy"]["start"] == "community"
    assert steps_of(routed)[0] == ("community", "30m", "4wh", 1)


def two_step_book() -> PolicyBook:
    return PolicyBook.from_dict(
        {
            "version": "t1",
            "default": "high",
            "policies": {
                "high": {
                    "steps": [
                        {"tier": "street", "report_in": "2h", "resolve": "3wd"},
                        {"tier": "district", "report_in": "4h", "resolve": "5wd", "repeat": 1},
                    ]
                }
            },
            "whistle": {
                "routine": {"report_in": "1h", "resolve": "2wd"},
                "hard": {"report_in": "1h", "resolve": "2wd", "raise_to": "street"},
            },
        }
    )


def test_route_snapshots_the_policies_it_is_given():
    r = ref()
    routed = route(
        summary("E0403"),
        catalogue=r.catalogue,
        grid=r.grid,
        calendar=r.calendar,
        policies=two_step_book(),
        at=MONDAY_0900,
    )
    assert (routed["policy"]["name"], routed["policy"]["version"]) == ("high", "t1")
    assert steps_of(routed) == [("street", "30m", "1d", 0), ("district", "4h", "5wd", 1)]


def test_a_policy_without_a_step_for_the_starting_tier_is_unroutable():
    r = ref()
    with pytest.raises(Unroutable, match="no step for the starting tier 'compound'"):
        route(
            summary("E0101"),
            catalogue=r.catalogue,
            grid=r.grid,
            calendar=r.calendar,
            policies=two_step_book(),
            at=MONDAY_0900,
        )


# -- whistles: summon ------------------------------------------------------------------------

WHISTLE_AT = MONDAY_0900 + timedelta(hours=1)  # Mon 10:00 Beijing
COMMUNITY_OPERATOR = {"name": "胡涛", "tier": "community", "code": "511802001001"}
STREET_OPERATOR = {"name": "黄国平", "tier": "street", "code": "511802001"}


def whistle(
    level: str = "routine",
    departments: tuple[str, ...] = ("sanitation", "housing"),
    by: dict[str, str] | None = None,
    reason: str = "消防通道上堆满了建筑垃圾",
) -> dict[str, Any]:
    """A case.whistled payload as intake emits it."""
    return {
        "level": level,
        "departments": list(departments),
        "by": by or COMMUNITY_OPERATOR,
        "reason": reason,
        "whistled_at": WHISTLE_AT,
    }


def summon_demo(
    w: dict[str, Any],
    routed: dict[str, Any] | None = None,
    *,
    snapshot: dict[str, Any] | None = None,
    grid: Any = None,
) -> dict[str, Any]:
    """Summon onto a routed case (E0402 by default: fire, police, urban_mgmt)."""
    r = ref()
    routed = routed or route_demo("E0402")
    return summon(
        w,
        case=routed["case"],
        on_case=[a["department"] for a in routed["assignments"]],
        snapshot=snapshot or routed["policy"],
        grid=grid or r.grid,
        calendar=r.calendar,
        at=WHISTLE_AT,
    )


def test_a_routine_whistle_summons_new_departments_with_the_whistle_deadlines():
    routed = route_demo("E0402")
    added = summon_demo(whistle(), routed)
    # 30m from Mon 10:00; 1wd = 7 working hours: Mon 10–12 and 14–17:30, Tue 08:30–10:00.
    due = (sh(2026, 11, 23, 10, 30), sh(2026, 11, 24, 10))
    assert added["assignments"] == [
        Assignment("sanitation", "summoned", *due, "30m", "1wd").as_dict(),
        Assignment("housing", "summoned", *due, "30m", "1wd").as_dict(),
    ]
    assert added["already"] == []
    assert (added["reason"], added["level"], added["by"]) == (
        "whistle",
        "routine",
        COMMUNITY_OPERATOR,
    )
    assert added["note"] == "消防通道上堆满了建筑垃圾"
    assert added["case"] == routed["case"]
    assert added["added_at"] == WHISTLE_AT


def test_the_whistler_is_the_node_at_the_operators_tier():
    added = summon_demo(whistle())
    assert added["whistler"] == {
        "tier": "community",
        "code": "511802001001",
        "name": "桐梓林社区",
        "owner": {"id": "cm-0001", "name": "胡涛", "role": "社区党委书记", "phone": "13900000003"},
    }
    assert added["raise_to"] is None  # a routine whistle leaves the case where it is


def test_a_hard_whistle_from_the_street_raises_the_case_to_the_district():
    added = summon_demo(whistle("hard", ("fire", "housing"), STREET_OPERATOR))
    assert [(a["department"], a["role"]) for a in added["assignments"]] == [("housing", "summoned")]
    assert added["already"] == ["fire"]
    assert (added["whistler"]["tier"], added["whistler"]["code"], added["whistler"]["name"]) == (
        "street",
        "511802001",
        "青江街道",
    )
    assert added["raise_to"]["tier"] == "district"
    assert added["raise_to"]["code"] == "511802"
    assert added["raise_to"]["owner"]["name"] == "张建国"


def test_a_whistle_for_departments_already_on_the_case_adds_no_assignment():
    added = summon_demo(whistle(departments=("police", "fire")))
    assert added["assignments"] == []
    assert added["already"] == ["police", "fire"]  # in the whistle's order
    event = make_event("assignments.added", "c-1", added, producer="routing", at=WHISTLE_AT)
    assert event.data["already"] == ["police", "fire"]


def test_a_department_named_twice_is_summoned_once():
    added = summon_demo(whistle(departments=("sanitation", "fire", "sanitation", "fire")))
    assert [a["department"] for a in added["assignments"]] == ["sanitation"]
    assert added["already"] == ["fire"]


def test_summon_reads_the_terms_from_the_case_snapshot_not_the_policy_file():
    routed = route_demo("E0402")
    snapshot = copy.deepcopy(routed["policy"])
    snapshot["whistle"]["routine"] |= {"report_in": "1h", "resolve": "2h", "raise_to": "street"}
    added = summon_demo(whistle(departments=("sanitation",)), routed, snapshot=snapshot)
    [a] = added["assignments"]
    assert (a["report_in_due"], a["resolve_due"]) == (sh(2026, 11, 23, 11), sh(2026, 11, 23, 12))
    assert (a["report_in"], a["resolve"]) == ("1h", "2h")
    assert (added["raise_to"]["tier"], added["raise_to"]["code"]) == ("street", "511802001")


def test_summon_on_the_four_level_grid_raises_to_a_tier_the_grid_has():
    r = ref()
    grid = four_level_grid()
    routed = route(
        summary("E0402", "511802001001001"),
        catalogue=r.catalogue,
        grid=grid,
        calendar=r.calendar,
        policies=r.policy,
        at=MONDAY_0900,
    )
    snapshot = copy.deepcopy(routed["policy"])
    snapshot["whistle"]["hard"]["raise_to"] = "area"  # no areas here: the community answers
    added = summon_demo(whistle("hard"), routed, snapshot=snapshot, grid=grid)
    assert (added["raise_to"]["tier"], added["raise_to"]["code"]) == ("community", "511802001001")
    assert added["whistler"]["owner"]["name"] == "社区书记"


def test_summon_on_a_case_outside_the_grid_is_unroutable():
    routed = route_demo("E0402")
    routed["case"] = summary("E0402", "511802999999999")
    with pytest.raises(Unroutable, match="511802999999999"):
        summon_demo(whistle(), routed)


@pytest.mark.parametrize(
    ("level", "departments", "by"),
    [
        ("routine", ("sanitation",), COMMUNITY_OPERATOR),
        ("routine", ("fire", "police"), COMMUNITY_OPERATOR),
        ("hard", ("housing", "fire"), STREET_OPERATOR),
        ("hard", ("urban_mgmt",), COMMUNITY_OPERATOR),
    ],
)
def test_every_summon_payload_is_a_valid_assignments_added_event(level, departments, by):
    added = summon_demo(whistle(level, departments, by))
    event = make_event("assignments.added", "c-1", added, producer="routing", at=WHISTLE_AT)
    assert [a["department"] for a in event.data["assignments"]] == [
        a["department"] for a in added["assignments"]
    ]
    assert {a["role"] for a in event.data["assignments"]} <= {"summoned"}
    assert event.data["already"] == added["already"]
    assert event.data["whistler"]["tier"] == by["tier"]
    assert (event.data["raise_to"] or {}).get("tier") == ("district" if level == "hard" else None)
    assert event.data["case"]["category"] == "E0402"


def test_a_summon_payload_is_not_a_routed_case():
    with pytest.raises(InvalidEvent, match=r"^case\.routed: "):
        make_event("case.routed", "c-1", summon_demo(whistle()), producer="routing", at=WHISTLE_AT)


# -- 协同 and manual dispatch: requested --------------------------------------------------------

REQUEST_AT = MONDAY_0900 + timedelta(hours=1)  # Mon 10:00 Beijing
# E0402's first step keeps the catalogue's deadlines: 30m, and 4wh from 10:00 (lunch 12–14)
FIRST_STEP_DUE = (sh(2026, 11, 23, 10, 30), sh(2026, 11, 23, 16))


def request(department: str = "traffic", role: str = "assist", kind: str = "assist",
            requested_by: str = "fire", note: str = "需要拖车") -> dict[str, Any]:
    """An assignment.requested payload as intake emits it."""
    return {"department": department, "role": role, "kind": kind,
            "requested_by": requested_by, "note": note, "at": REQUEST_AT}


def request_demo(req: dict[str, Any], routed: dict[str, Any] | None = None, *,
                 snapshot: dict[str, Any] | None = None) -> dict[str, Any]:
    routed = routed or route_demo("E0402")
    return requested(req, case=routed["case"], snapshot=snapshot or routed["policy"],
                     calendar=ref().calendar, at=REQUEST_AT)


def test_an_assisting_department_gets_the_first_steps_deadlines():
    routed = route_demo("E0402")
    added = request_demo(request(), routed)
    assert added == {
        "reason": "assist",
        "requested_by": "fire",
        "note": "需要拖车",
        "assignments": [Assignment("traffic", "assist", *FIRST_STEP_DUE, "30m", "4wh").as_dict()],
        "case": routed["case"],
        "added_at": REQUEST_AT,
    }


def test_a_lead_dispatched_by_hand_is_a_manual_addition():
    added = request_demo(request("housing", "lead", "manual", "community:511802001001:胡涛", ""))
    assert (added["reason"], added["requested_by"], added["note"]) == (
        "manual", "community:511802001001:胡涛", ""
    )
    assert [(a["department"], a["role"]) for a in added["assignments"]] == [("housing", "lead")]


def test_a_request_without_a_note_adds_with_an_empty_note():
    req = request()
    del req["note"]
    assert request_demo(req)["note"] == ""


def test_requested_reads_the_deadlines_from_the_case_snapshot():
    routed = route_demo("E0402")
    snapshot = copy.deepcopy(routed["policy"])
    snapshot["steps"][0] |= {"report_in": "1h", "resolve": "2h"}
    [a] = request_demo(request(), routed, snapshot=snapshot)["assignments"]
    assert (a["report_in_due"], a["resolve_due"], a["report_in"], a["resolve"]) == (
        sh(2026, 11, 23, 11), sh(2026, 11, 23, 12), "1h", "2h"
    )


@pytest.mark.parametrize(("role", "kind"), [("assist", "assist"), ("lead", "manual"),
                                            ("assist", "manual")])
def test_every_requested_payload_is_a_valid_assignments_added_event(role, kind):
    added = request_demo(request(role=role, kind=kind))
    event = make_event("assignments.added", "c-1", added, producer="routing", at=REQUEST_AT)
    assert (event.data["reason"], event.data["assignments"][0]["role"]) == (kind, role)
    assert (event.data["level"], event.data["by"], event.data["whistler"]) == (None, None, None)


# -- returns (退单): reroute ---------------------------------------------------------------------


def returned(department: str = "fire", role: str = "lead",
             reason_code: str = "needs_other_department", note: str = "应由交警处理"
             ) -> dict[str, Any]:
    """An assignment.returned payload as intake emits it."""
    return {"department": department, "role": role, "reason_code": reason_code, "note": note,
            "actor": f"{department}-desk", "at": REQUEST_AT}


def reroute_demo(ret: dict[str, Any], ever: tuple[str, ...] | None = None,
                 category: str = "E0402", catalogue: Catalogue | None = None
                 ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Reroute a return on a routed demo case; ``ever``: the departments ever on it
    (by default those routed). Returns the event type, its payload and the routing."""
    r = ref()
    routed = route_demo(category)
    on_case = [a["department"] for a in routed["assignments"]] if ever is None else list(ever)
    type_, payload = reroute(
        ret, catalogue=catalogue or r.catalogue, case=routed["case"], ever_on_case=on_case,
        snapshot=routed["policy"], start_tier=routed["tier"], calendar=r.calendar,
        at=REQUEST_AT,
    )
    return type_, payload, routed


def test_a_returned_lead_goes_to_the_next_candidate_not_yet_on_the_case():
    type_, added, routed = reroute_demo(returned())  # fire, police, urban_mgmt on the case
    assert type_ == "assignments.added"
    assert added == {
        "reason": "reroute",
        "requested_by": "routing",
        "note": "fire returned it: needs_other_department (应由交警处理)",
        "assignments": [Assignment("traffic", "lead", *FIRST_STEP_DUE, "30m", "4wh").as_dict()],
        "replaces": "fire",
        "case": routed["case"],
        "added_at": REQUEST_AT,
    }


def test_a_department_that_was_ever_on_the_case_is_skipped():
    # traffic took it over earlier and returned it too: housing is next
    _, added, _ = reroute_demo(returned("traffic"), ("fire", "police", "urban_mgmt", "traffic"))
    assert [(a["department"], a["role"]) for a in added["assignments"]] == [("housing", "lead")]
    assert added["replaces"] == "traffic"


def test_candidates_come_in_catalogue_order_from_the_lead():
    # only the lead was on the case: its first assisting department is next
    _, added, _ = reroute_demo(returned(), ("fire",))
    assert [a["department"] for a in added["assignments"]] == ["police"]


def test_a_returned_assisting_department_is_replaced_by_an_assisting_one():
    _, added, _ = reroute_demo(returned("police", "assist", "not_our_responsibility", ""))
    assert [(a["department"], a["role"]) for a in added["assignments"]] == [("traffic", "assist")]
    assert added["note"] == "police returned it: not_our_responsibility"


def test_a_summoned_department_that_returns_is_replaced_as_an_assist():
    ever = ("fire", "police", "urban_mgmt", "sanitation")  # a whistle summoned sanitation
    _, added, _ = reroute_demo(returned("sanitation", "summoned", "cannot_handle", ""), ever)
    assert [(a["department"], a["role"]) for a in added["assignments"]] == [("traffic", "assist")]
    assert added["replaces"] == "sanitation"


def test_when_no_candidate_is_left_the_tier_owner_dispatches_by_hand():
    ret = returned("sanitation", "lead", "not_our_responsibility", "")
    type_, payload, routed = reroute_demo(ret, ("sanitation", "urban_mgmt"), category="E0101")
    assert type_ == "case.needs_dispatch"
    assert payload == {
        "returned": ret,
        "tier": routed["tier"],
        "reason": "sanitation returned it (not_our_responsibility) and no other department of "
                  "the catalogue is left: dispatch by hand",
        "case": routed["case"],
        "at": REQUEST_AT,
    }
    assert (payload["tier"]["tier"], payload["tier"]["code"]) == ("compound", "511802001001101")


def test_a_category_without_alternates_has_nobody_once_its_own_departments_were_on_it():
    type_, payload, routed = reroute_demo(returned("utilities"), category="E0102")
    assert type_ == "case.needs_dispatch"
    assert payload["tier"] == routed["tier"]
    assert payload["tier"]["tier"] == "area"  # E0102 starts at the area


def test_the_alternates_of_a_category_follow_its_assisting_departments():
    # E0101: sanitation leads alone; urban_mgmt is its alternate
    _, added, _ = reroute_demo(returned("sanitation"), ("sanitation",), category="E0101")
    assert [(a["department"], a["role"]) for a in added["assignments"]] == [("urban_mgmt",
                                                                             "lead")]


def test_a_category_the_catalogue_does_not_know_has_no_candidates():
    empty = Catalogue("empty", ref().catalogue.departments, {})
    type_, _, _ = reroute_demo(returned(), ("fire",), catalogue=empty)
    assert type_ == "case.needs_dispatch"


def test_the_returned_payload_is_copied_into_the_needs_dispatch():
    ret = returned("sanitation", "lead", "other", "")
    _, payload, _ = reroute_demo(ret, ("sanitation", "urban_mgmt"), category="E0101")
    ret["note"] = "changed"
    assert payload["returned"]["note"] == ""


@pytest.mark.parametrize(
    ("ret", "ever", "category", "expected"),
    [
        (returned(), None, "E0402", "assignments.added"),
        (returned("sanitation", "summoned", "duplicate", ""),
         ("fire", "police", "urban_mgmt", "sanitation"), "E0402", "assignments.added"),
        (returned("sanitation", "lead", "wrong_location", "地址错了"), ("sanitation",
                                                                      "urban_mgmt"),
         "E0101", "case.needs_dispatch"),
    ],
)
def test_every_reroute_payload_is_a_valid_event(ret, ever, category, expected):
    type_, payload, _ = reroute_demo(ret, ever, category)
    assert type_ == expected
    event = make_event(type_, "c-1", payload, producer="routing", at=REQUEST_AT)
    assert event.type == expected
    if expected == "assignments.added":
        assert event.data["replaces"] == ret["department"]
    else:
        assert event.data["returned"]["reason_code"] == ret["reason_code"]


# -- what cannot be routed -------------------------------------------------------------------


def test_unknown_category_is_unroutable():
    with pytest.raises(Unroutable, match=r"unknown category 'X9999'"):
        route_demo("X9999")


def test_unknown_grid_code_is_unroutable():
    with pytest.raises(Unroutable, match=r"unknown grid code 511802999999999"):
        route_demo("E0101", "511802999999999")


def test_community_code_is_unroutable_it_is_above_the_cells():
    with pytest.raises(Unroutable, match=r"511802001001 is a community"):
        route_demo("E0101", "511802001001")


def test_unroutable_is_a_value_error():
    assert issubclass(Unroutable, ValueError)


def test_unroutable_category_reported_before_the_grid_is_looked_at():
    with pytest.raises(Unroutable, match="unknown category"):
        route_demo("X9999", "511802999999999")


def test_route_looks_categories_up_in_the_catalogue_it_is_given():
    r = ref()
    empty = Catalogue("empty", r.catalogue.departments, {})
    with pytest.raises(Unroutable, match="E0101"):
        route(
            summary("E0101"),
            catalogue=empty,
            grid=r.grid,
            calendar=r.calendar,
            policies=r.policy,
            at=MONDAY_0900,
        )
