"""The category catalogue: the demo data and the validation of catalogue data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.calendar import Duration
from shared.catalogue import (
    DEFAULT_DUPLICATE_RADIUS_M,
    DEFAULT_DUPLICATE_WINDOW_H,
    STARTING_TIERS,
    Catalogue,
    CatalogueError,
)
from shared.reference import load_reference

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"

REQUIRED_DEPARTMENTS = {
    "urban_mgmt",
    "market_supervision",
    "police",
    "housing",
    "civil_affairs",
    "sanitation",
    "utilities",
    "fire",
    "gas",
    "greening",
    "traffic",
}


def demo() -> Catalogue:
    return load_reference(DEMO).catalogue


def by_name(cat: Catalogue, name: str):
    found = [c for c in cat.categories.values() if c.name == name]
    assert len(found) == 1, f"{name}: {len(found)} categories"
    return found[0]


# -- the demo catalogue ----------------------------------------------------------------------


def test_demo_catalogue_size_and_families():
    cat = demo()
    assert cat.version
    assert len(cat.departments) >= 10
    assert set(cat.departments) >= REQUIRED_DEPARTMENTS
    assert len(cat.categories) >= 24
    families = {c.family for c in cat.categories.values()}
    assert families == {"component", "event"}
    for family in families:
        assert sum(c.family == family for c in cat.categories.values()) >= 8


def test_demo_every_department_leads_or_assists():
    cat = demo()
    used = {d for c in cat.categories.values() for d in c.departments}
    assert used == set(cat.departments)


def test_demo_names_and_codes():
    cat = demo()
    for dept in cat.departments.values():
        assert dept.name and dept.name_en, dept.code
    for code, c in cat.categories.items():
        assert c.name and c.name_en, code
        letter = {"component": "C", "event": "E"}[c.family]
        assert re.fullmatch(rf"{letter}\d{{4}}", code), code
        assert code[1:3] == c.major_code, code
        assert c.major_name
        assert c.tier in STARTING_TIERS
        assert c.lead not in c.assist
        assert len(set(c.assist)) == len(c.assist)


def test_demo_deadlines_are_sane():
    cat = demo()
    for c in cat.categories.values():
        assert c.report_in.amount > 0 and c.resolve.amount > 0, c.code
        # a department signs in (报到) within minutes or hours, never days
        assert c.report_in.unit in ("minutes", "hours", "working_hours"), c.code


def test_demo_tiers_follow_the_small_things_stay_small_rule():
    cat = demo()
    tiers = {c.tier for c in cat.categories.values()}
    assert {"compound", "area", "community"} <= tiers
    for c in cat.categories.values():
        if len(c.departments) >= 3:
            assert c.tier in ("community", "street", "district"), c.code
        if c.tier == "compound":
            assert len(c.departments) <= 2, c.code


def test_demo_key_categories():
    cat = demo()
    garbage = by_name(cat, "暴露垃圾")
    assert garbage.family == "event"
    assert garbage.lead == "sanitation"
    assert garbage.report_in == Duration(30, "minutes")
    assert garbage.resolve == Duration(4, "working_hours")

    gas = by_name(cat, "燃气泄漏")
    assert gas.lead == "gas"
    assert set(gas.assist) == {"fire", "police"}
    assert gas.tier == "community"
    assert gas.report_in == Duration(15, "minutes")
    assert gas.resolve == Duration(2, "hours")
    assert not gas.resolve.working

    stall = by_name(cat, "占道经营")
    assert stall.lead == "urban_mgmt"
    assert "market_supervision" in stall.assist

    lane = by_name(cat, "消防通道堵塞")
    assert lane.lead == "fire"
    assert {"police", "urban_mgmt"} <= set(lane.assist)

    assert by_name(cat, "路灯").family == "component"
    assert by_name(cat, "独居老人照护").lead == "civil_affairs"
    assert by_name(cat, "食品安全").lead == "market_supervision"
    assert "housing" in by_name(cat, "违章搭建").departments


def test_lookup_and_as_dict():
    cat = demo()
    assert "E0101" in cat
    assert "E9999" not in cat
    assert cat.get("E9999") is None
    d = cat.get("E0101").as_dict()
    assert d["family"] == "event" and d["family_name"] == "事件"
    assert d["major"] == {"code": "01", "name": "市容环境"}
    assert d["deadlines"]["resolve"] == {"amount": 4, "unit": "working_hours", "text": "4wh"}
    assert cat.departments["sanitation"].as_dict()["code"] == "sanitation"


# -- validation errors -----------------------------------------------------------------------


def minimal(**minor) -> dict:
    row = {
        "code": "E0101",
        "name": "暴露垃圾",
        "name_en": "Exposed garbage",
        "lead": "sanitation",
        "assist": ["urban_mgmt"],
        "tier": "compound",
        "report_in": "30m",
        "resolve": "4wh",
    }
    row.update(minor)
    return {
        "version": "t",
        "departments": [
            {"code": "sanitation", "name": "环卫"},
            {"code": "urban_mgmt", "name": "城管"},
        ],
        "families": [
            {"family": "event", "majors": [{"code": "01", "name": "市容环境", "minors": [row]}]},
        ],
    }


def test_minimal_catalogue_loads():
    cat = Catalogue.from_dict(minimal())
    c = cat.get("E0101")
    assert c.departments == ("sanitation", "urban_mgmt")
    assert c.resolve == Duration(4, "working_hours")


def test_unknown_department():
    with pytest.raises(CatalogueError, match="unknown department"):
        Catalogue.from_dict(minimal(lead="water_board"))
    with pytest.raises(CatalogueError, match="unknown department"):
        Catalogue.from_dict(minimal(assist=["police"]))


def test_lead_cannot_assist():
    with pytest.raises(CatalogueError, match="lead"):
        Catalogue.from_dict(minimal(assist=["urban_mgmt", "sanitation"]))


@pytest.mark.parametrize("tier", ["building", "city", "", "Compound"])
def test_bad_tier(tier):
    with pytest.raises(CatalogueError, match="tier"):
        Catalogue.from_dict(minimal(tier=tier))


@pytest.mark.parametrize("field", ["report_in", "resolve"])
@pytest.mark.parametrize("text", ["4 hours", "1w", "h", "1.5h", "-2h", ""])
def test_bad_duration(field, text):
    with pytest.raises(CatalogueError, match="duration"):
        Catalogue.from_dict(minimal(**{field: text}))


def test_missing_field():
    data = minimal()
    del data["families"][0]["majors"][0]["minors"][0]["lead"]
    with pytest.raises(CatalogueError, match="E0101"):
        Catalogue.from_dict(data)


def test_duplicates_and_unknown_family():
    data = minimal()
    data["departments"].append({"code": "sanitation", "name": "again"})
    with pytest.raises(CatalogueError, match="duplicate department"):
        Catalogue.from_dict(data)

    data = minimal()
    minors = data["families"][0]["majors"][0]["minors"]
    minors.append(dict(minors[0]))
    with pytest.raises(CatalogueError, match="duplicate category"):
        Catalogue.from_dict(data)

    data = minimal()
    data["families"][0]["family"] = "incident"
    with pytest.raises(CatalogueError, match="family"):
        Catalogue.from_dict(data)


# -- the closed loop: alternates, reopening, duplicates -----------------------------------------


def with_police(**minor) -> dict:
    """``minimal`` with a third department, police, to name as an alternate."""
    data = minimal(**minor)
    data["departments"].append({"code": "police", "name": "公安"})
    return data


def test_the_optional_fields_default():
    c = Catalogue.from_dict(minimal()).get("E0101")
    assert c.alternates == ()
    assert c.candidates == ("sanitation", "urban_mgmt")
    assert c.reopen_on_complaint is True
    assert (c.duplicate_radius_m, c.duplicate_window_h) == (100.0, 24.0)
    assert (DEFAULT_DUPLICATE_RADIUS_M, DEFAULT_DUPLICATE_WINDOW_H) == (100.0, 24.0)


def test_candidates_are_the_lead_the_assisting_then_the_alternates_in_order():
    data = with_police(alternates=["police"])
    data["departments"].append({"code": "traffic", "name": "交警"})
    data["families"][0]["majors"][0]["minors"][0]["alternates"] = ["traffic", "police"]
    c = Catalogue.from_dict(data).get("E0101")
    assert c.alternates == ("traffic", "police")
    assert c.departments == ("sanitation", "urban_mgmt")  # alternates are not routed to
    assert c.candidates == ("sanitation", "urban_mgmt", "traffic", "police")


def test_an_alternate_is_a_known_department():
    with pytest.raises(CatalogueError, match="category E0101: unknown department 'water_board'"):
        Catalogue.from_dict(minimal(alternates=["water_board"]))


@pytest.mark.parametrize("alternates", [["police", "police"], ["sanitation"], ["urban_mgmt"],
                                        ["police", "urban_mgmt"]])
def test_alternates_repeat_no_department(alternates):
    with pytest.raises(CatalogueError, match="category E0101: alternates repeat a department"):
        Catalogue.from_dict(with_police(alternates=alternates))


@pytest.mark.parametrize("key", ["assist", "alternates"])
def test_assist_and_alternates_are_lists(key):
    with pytest.raises(CatalogueError,
                       match=f"category E0101: {key} must be a list of department codes"):
        Catalogue.from_dict(with_police(**{key: "police"}))


def test_a_category_may_keep_an_unsatisfied_rating_from_reopening_it():
    c = Catalogue.from_dict(minimal(reopen_on_complaint=False)).get("E0101")
    assert c.reopen_on_complaint is False


def test_reopen_on_complaint_is_a_boolean_not_any_truthy_text():
    with pytest.raises(CatalogueError, match="reopen_on_complaint"):
        Catalogue.from_dict(minimal(reopen_on_complaint="false"))


def test_duplicate_radius_and_window_are_numbers():
    c = Catalogue.from_dict(minimal(duplicate_radius_m=30, duplicate_window_h="72")).get("E0101")
    assert (c.duplicate_radius_m, c.duplicate_window_h) == (30.0, 72.0)
    assert isinstance(c.duplicate_radius_m, float)
    with pytest.raises(CatalogueError, match="category E0101: could not convert string to float"):
        Catalogue.from_dict(minimal(duplicate_radius_m="far"))


def test_a_zero_radius_and_window_are_allowed():
    c = Catalogue.from_dict(minimal(duplicate_radius_m=0, duplicate_window_h=0)).get("E0101")
    assert (c.duplicate_radius_m, c.duplicate_window_h) == (0.0, 0.0)


@pytest.mark.parametrize("field", ["duplicate_radius_m", "duplicate_window_h"])
def test_a_negative_radius_or_window_is_refused(field):
    with pytest.raises(CatalogueError,
                       match="category E0101: duplicate radius and window must be >= 0"):
        Catalogue.from_dict(minimal(**{field: -1}))


def test_as_dict_carries_the_loop_fields():
    d = Catalogue.from_dict(with_police(alternates=["police"], reopen_on_complaint=False,
                                        duplicate_radius_m=50, duplicate_window_h=48)
                            ).get("E0101").as_dict()
    assert (d["alternates"], d["reopen_on_complaint"], d["duplicates"]) == (
        ["police"], False, {"radius_m": 50.0, "window_h": 48.0}
    )


@pytest.mark.parametrize(
    ("code", "alternates", "reopens", "radius", "window"),
    [
        ("E0101", ("urban_mgmt",), True, 50.0, 48.0),  # 暴露垃圾
        ("E0402", ("traffic", "housing"), True, 150.0, 12.0),  # 消防通道堵塞
        ("E0504", ("urban_mgmt", "police"), True, 100.0, 24.0),  # 机动车乱停放
        ("E0701", ("civil_affairs",), False, 100.0, 24.0),  # 邻里纠纷
        ("E0801", (), True, 0.0, 24.0),  # 独居老人照护: never a duplicate
        ("C0101", (), True, 30.0, 72.0),  # 路灯
        ("E0102", (), True, 100.0, 24.0),  # 污水横流: the defaults
    ],
)
def test_demo_loop_settings(code, alternates, reopens, radius, window):
    c = demo().get(code)
    assert (c.alternates, c.reopen_on_complaint, c.duplicate_radius_m, c.duplicate_window_h) == (
        alternates, reopens, radius, window
    )


def test_demo_candidates_of_a_blocked_fire_lane():
    assert demo().get("E0402").candidates == ("fire", "police", "urban_mgmt", "traffic",
                                              "housing")
