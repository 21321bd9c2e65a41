"""Routing rules: category × cell → starting tier, lead and assisting departments, deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.routing.rules import Assignment, Unroutable, plan_assignments, route
from shared.calendar import WorkCalendar
from shared.catalogue import Catalogue
from shared.events import make_event
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


def route_demo(category: str, grid_code: str = TONGGONG, at: datetime = MONDAY_0900) -> dict:
    r = ref()
    return route(
        summary(category, grid_code),
        catalogue=r.catalogue,
        grid=r.grid,
        calendar=r.calendar,
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
    r = ref()
    category = r.catalogue.get("E0401")  # 燃气泄漏: gas leads, fire + police assist, 15m / 2h
    plans = plan_assignments(category, r.calendar, MONDAY_0900)
    assert plans == [
        Assignment("gas", "lead", sh(2026, 11, 23, 9, 15), sh(2026, 11, 23, 11), "15m", "2h"),
        Assignment("fire", "assist", sh(2026, 11, 23, 9, 15), sh(2026, 11, 23, 11), "15m", "2h"),
        Assignment("police", "assist", sh(2026, 11, 23, 9, 15), sh(2026, 11, 23, 11), "15m", "2h"),
    ]


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
        at=MONDAY_0900,
    )
    assert routed["assignments"][0]["resolve_due"] == sh(2026, 11, 23, 13)


# -- the payload -----------------------------------------------------------------------------


def test_payload_carries_the_case_catalogue_version_and_time():
    case = summary("E0402")
    r = ref()
    routed = route(case, catalogue=r.catalogue, grid=r.grid, calendar=r.calendar, at=MONDAY_0900)
    assert routed["case"] == case
    assert routed["catalogue_version"] == "2026.1"
    assert routed["routed_at"] == MONDAY_0900
    assert set(routed) == {"case", "tier", "assignments", "catalogue_version", "routed_at"}


@pytest.mark.parametrize("category", ["E0101", "E0102", "E0402", "E0403", "C0101"])
def test_payload_is_a_valid_case_routed_event(category):
    routed = route_demo(category)
    event = make_event("case.routed", "20261123-000001", routed, producer="routing", at=MONDAY_0900)
    assert event.data["tier"]["tier"] == routed["tier"]["tier"]
    assert [a["department"] for a in event.data["assignments"]] == [
        a["department"] for a in routed["assignments"]
    ]
    assert event.data["assignments"][0]["resolve_due"] == routed["assignments"][0]["resolve_due"]


def test_every_demo_category_routes_to_a_valid_event():
    r = ref()
    for code in r.catalogue.categories:
        routed = route_demo(code)
        make_event("case.routed", "c-1", routed, producer="routing", at=MONDAY_0900)
        assert routed["assignments"][0]["department"] == r.catalogue.get(code).lead


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
        route(summary("E0101"), catalogue=empty, grid=r.grid, calendar=r.calendar, at=MONDAY_0900)
