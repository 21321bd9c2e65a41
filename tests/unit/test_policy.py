"""Tier policies: loading and checking policy.yaml, choosing a policy, snapshotting it."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.calendar import Duration
from shared.policy import (
    Choice,
    Policy,
    PolicyBook,
    PolicyError,
    Step,
    WhistleTerms,
    step_duration,
    step_of_tier,
    whistle_terms,
)
from shared.reference import load_reference
from support import four_level_grid

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"
REF = load_reference(DEMO)
GRID4 = four_level_grid()

WHISTLE = {
    "routine": {"level": "routine", "report_in": "30m", "resolve": "1wd", "raise_to": None},
    "hard": {"level": "hard", "report_in": "30m", "resolve": "1wd", "raise_to": "district"},
}
STANDARD = [  # the demo's standard policy, as snapshot steps
    {"tier": "compound", "notify": ["departments", "tier_owner"],
     "report_in": "30m", "resolve": "4wh", "repeat": 0},
    {"tier": "area", "notify": ["departments", "tier_owner"],
     "report_in": "30m", "resolve": "4wh", "repeat": 0},
    {"tier": "community", "notify": ["departments", "tier_owner", "supervisors"],
     "report_in": "30m", "resolve": "1wd", "repeat": 1},
    {"tier": "street", "notify": ["departments", "tier_owner", "supervisors"],
     "report_in": "1h", "resolve": "2wd", "repeat": 2},
    {"tier": "district", "notify": ["departments", "tier_owner"],
     "report_in": "1h", "resolve": "3wd", "repeat": 3},
]
ALL = ["departments", "tier_owner", "supervisors"]


def demo_data() -> dict[str, Any]:
    """A fresh, editable copy of deploy/demo/policy.yaml."""
    return yaml.safe_load((DEMO / "policy.yaml").read_text(encoding="utf-8"))


def book(edit: Callable[[dict[str, Any]], Any] | None = None) -> PolicyBook:
    data = demo_data()
    if edit is not None:
        edit(data)
    return PolicyBook.from_dict(data)


def category(code: str):
    cat = REF.catalogue.get(code)
    assert cat is not None, code
    return cat


def snapshot(code: str, severity: str = "normal", grid=None, policies: PolicyBook | None = None):
    return (policies or REF.policy).snapshot(category(code), severity, grid or REF.grid)


def tiers(snap: dict[str, Any]) -> list[str]:
    return [s["tier"] for s in snap["steps"]]


def deadlines(snap: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [(s["tier"], s["report_in"], s["resolve"], s["repeat"]) for s in snap["steps"]]


# -- loading the demo policy --------------------------------------------------------------------


def test_demo_policy_loads_with_its_version_default_and_policies():
    p = REF.policy
    assert p.version == "2026.1"
    assert p.default == "standard"
    assert set(p.policies) == {"standard", "urgent_safety", "patient"}
    assert [s.as_dict() for s in p.policies["standard"].steps] == STANDARD


def test_demo_steps_are_typed_durations_bottom_to_top():
    urgent = REF.policy.policies["urgent_safety"]
    assert urgent.name == "urgent_safety"
    assert urgent.steps[0] == Step("compound", tuple(ALL), Duration(10, "minutes"),
                                   Duration(1, "hours"), 0)
    assert urgent.steps[-1] == Step("district", ("departments", "tier_owner"),
                                    Duration(15, "minutes"), Duration(2, "hours"), 3)
    assert REF.policy.policies["patient"].steps[3].report_in == Duration(4, "working_hours")
    assert REF.policy.policies["patient"].steps[3].resolve == Duration(5, "working_days")


def test_demo_whistle_terms():
    assert REF.policy.whistle == {
        "routine": WhistleTerms("routine", Duration(30, "minutes"), Duration(1, "working_days"),
                                None),
        "hard": WhistleTerms("hard", Duration(30, "minutes"), Duration(1, "working_days"),
                             "district"),
    }


def test_demo_category_rules():
    cats = REF.policy.categories
    assert cats["E0402"] == {"normal": Choice("urgent_safety", None, False)}
    assert cats["E0801"] == {
        "normal": Choice("patient", None, False),
        "urgent": Choice("urgent_safety", None, True),
    }
    assert cats["*"] == {"urgent": Choice("urgent_safety", None, True)}
    assert "E0101" not in cats  # not listed: standard


def test_notify_defaults_to_departments_and_tier_owner():
    def edit(d):
        del d["policies"]["standard"]["steps"][0]["notify"]

    assert book(edit).policies["standard"].steps[0].notify == ("departments", "tier_owner")


def test_repeat_defaults_to_zero_and_bounds_are_allowed():
    def edit(d):
        steps = d["policies"]["standard"]["steps"]
        del steps[0]["repeat"]
        steps[1]["repeat"] = 10

    steps = book(edit).policies["standard"].steps
    assert (steps[0].repeat, steps[1].repeat) == (0, 10)


def test_a_policy_may_skip_tiers_going_up():
    def edit(d):
        d["policies"]["lean"] = {"steps": [
            {"tier": "compound", "report_in": "1h", "resolve": "1wd"},
            {"tier": "street", "report_in": "2h", "resolve": "2wd"},
        ]}

    assert [s.tier for s in book(edit).policies["lean"].steps] == ["compound", "street"]


def test_default_is_called_default_when_not_named():
    def edit(d):
        del d["default"]
        d["policies"]["default"] = d["policies"]["standard"]

    b = book(edit)
    assert b.default == "default"
    assert b.choose("E0101") == Choice("default", None)


def test_policy_error_is_a_value_error():
    assert issubclass(PolicyError, ValueError)


# -- bad data -----------------------------------------------------------------------------------


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def _swap_first_steps(d: dict[str, Any]) -> None:
    steps = d["policies"]["standard"]["steps"]
    steps[0], steps[1] = steps[1], steps[0]


def _duplicate_step(d: dict[str, Any]) -> None:
    steps = d["policies"]["standard"]["steps"]
    steps.insert(1, dict(steps[0]))


STEP0 = ["policies", "standard", "steps", 0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(_set([*STEP0, "tier"], "building"),
                     r"policies\.standard\.steps\[0\]: tier must be one of", id="tier-building"),
        pytest.param(_set([*STEP0, "tier"], "province"),
                     r"policies\.standard\.steps\[0\]: tier must be one of", id="tier-unknown"),
        pytest.param(_delete([*STEP0, "tier"]),
                     r"policies\.standard\.steps\[0\]: tier must be one of", id="tier-missing"),
        pytest.param(_swap_first_steps,
                     r"policies\.standard: steps must go up the grid", id="steps-down"),
        pytest.param(_duplicate_step,
                     r"policies\.standard: steps must go up the grid", id="steps-twice"),
        pytest.param(_set([*STEP0, "notify"], ["departments", "mayor"]),
                     r"steps\[0\]: unknown notify target\(s\) \['mayor'\]", id="notify"),
        pytest.param(_set([*STEP0, "repeat"], 11),
                     r"steps\[0\]: repeat must be a whole number between 0 and 10", id="repeat-11"),
        pytest.param(_set([*STEP0, "repeat"], -1),
                     r"steps\[0\]: repeat must be a whole number between 0 and 10",
                     id="repeat-negative"),
        pytest.param(_set([*STEP0, "repeat"], "many"),
                     r"steps\[0\]: repeat must be a whole number", id="repeat-text"),
        pytest.param(_set([*STEP0, "repeat"], 1.5),
                     r"steps\[0\]: repeat must be a whole number", id="repeat-fraction"),
        pytest.param(_set([*STEP0, "resolve"], "4 hours"),
                     r"policies\.standard\.steps\[0\]: duration '4 hours'", id="duration-text"),
        pytest.param(_set([*STEP0, "report_in"], 30),
                     r"policies\.standard\.steps\[0\]: duration '30'", id="duration-no-unit"),
        pytest.param(_delete([*STEP0, "resolve"]),
                     r"policies\.standard\.steps\[0\]: resolve is missing", id="duration-missing"),
        pytest.param(_set(["default"], "lenient"),
                     r"default policy 'lenient' is not defined", id="default"),
        pytest.param(_set(["categories", "E0401", "policy"], "lenient"),
                     r"categories\.E0401: unknown policy 'lenient'", id="category-policy"),
        pytest.param(_set(["categories", "E0801", "severity", "urgent", "policy"], "lenient"),
                     r"categories\.E0801\.severity\.urgent: unknown policy 'lenient'",
                     id="category-severity-policy"),
        pytest.param(_set(["severity", "urgent", "policy"], "lenient"),
                     r"severity\.urgent: unknown policy 'lenient'", id="severity-policy"),
        pytest.param(_set(["categories", "E0401", "start"], "building"),
                     r"categories\.E0401: start must be one of", id="category-start"),
        pytest.param(_set(["categories", "E0801", "severity", "critical"], {"policy": "patient"}),
                     r"categories\.E0801: unknown severity 'critical'", id="category-severity"),
        pytest.param(_set(["severity", "critical"], {"policy": "patient"}),
                     r"severity: unknown severity 'critical'", id="severity"),
        pytest.param(_delete(["whistle", "hard"]),
                     r"whistle: terms missing for \['hard'\]", id="whistle-missing-hard"),
        pytest.param(_delete(["whistle"]),
                     r"whistle: terms missing for \['hard', 'routine'\]", id="whistle-missing"),
        pytest.param(_set(["whistle", "loud"], {"report_in": "30m", "resolve": "1wd"}),
                     r"whistle: unknown level 'loud'", id="whistle-level"),
        pytest.param(_set(["whistle", "hard", "raise_to"], "province"),
                     r"whistle\.hard: raise_to must be one of", id="raise-to-unknown"),
        pytest.param(_set(["whistle", "hard", "raise_to"], "building"),
                     r"whistle\.hard: raise_to must be one of", id="raise-to-building"),
        pytest.param(_set(["whistle", "routine", "resolve"], "soon"),
                     r"whistle\.routine: duration 'soon'", id="whistle-duration"),
        pytest.param(_delete(["whistle", "routine", "report_in"]),
                     r"whistle\.routine: report_in is missing", id="whistle-duration-missing"),
    ],
)
def test_bad_policy_data_is_refused_with_where_and_why(edit, message):
    with pytest.raises(PolicyError, match=message):
        book(edit)


def test_the_demo_data_itself_is_valid():
    """The baseline of every bad-data case above loads: each failure is the edit's."""
    assert book().version == "2026.1"


def test_a_policy_naming_an_unknown_category_fails_loading(tmp_path):
    for name in ("district.yaml", "catalogue.yaml", "calendar.yaml"):
        shutil.copy(DEMO / name, tmp_path / name)
    data = demo_data()
    data["categories"]["Z9999"] = {"policy": "patient"}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(data, allow_unicode=True),
                                          encoding="utf-8")
    with pytest.raises((PolicyError, SystemExit), match="Z9999"):
        load_reference(tmp_path)


# -- choosing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "severity", "expected"),
    [
        ("E0402", "normal", Choice("urgent_safety", None, False)),  # category rule
        ("E0701", "normal", Choice("patient", None, False)),
        ("E0801", "normal", Choice("patient", None, False)),
        ("E0801", "urgent", Choice("urgent_safety", None, True)),  # category severity rule
        ("E0701", "urgent", Choice("urgent_safety", None, True)),  # global severity rule
        ("E0101", "urgent", Choice("urgent_safety", None, True)),  # global severity rule
        ("E0101", "normal", Choice("standard", None, False)),  # default
        ("Z9999", "normal", Choice("standard", None, False)),  # unknown category: default
    ],
)
def test_choose(code, severity, expected):
    assert REF.policy.choose(code, severity) == expected


def test_severity_defaults_to_normal():
    assert REF.policy.choose("E0701") == Choice("patient", None, False)


def test_without_a_global_severity_rule_an_urgent_report_follows_its_category():
    b = book(_delete(["severity"]))
    assert b.choose("E0701", "urgent") == Choice("patient", None, False)
    assert b.choose("E0101", "urgent") == Choice("standard", None, False)
    assert b.choose("E0801", "urgent") == Choice("urgent_safety", None, True)


def test_a_category_severity_rule_wins_over_the_global_one():
    def edit(d):
        d["categories"]["E0801"]["severity"]["urgent"] = {"policy": "standard"}

    assert book(edit).choose("E0801", "urgent") == Choice("standard", None, True)


def test_a_category_start_is_kept_by_its_severity_rules():
    def edit(d):
        d["categories"]["E0101"] = {
            "policy": "patient", "start": "community",
            "severity": {"urgent": {"policy": "urgent_safety"}},
        }
        d["categories"]["E0102"] = {"severity": {"urgent": {"start": "street"}}}

    b = book(edit)
    assert b.choose("E0101") == Choice("patient", "community", False)
    assert b.choose("E0101", "urgent") == Choice("urgent_safety", "community", True)
    # a rule that names no policy takes the default one
    assert b.choose("E0102") == Choice("standard", None, False)
    assert b.choose("E0102", "urgent") == Choice("standard", "street", True)


def test_the_general_severity_rule_keeps_a_categorys_own_start():
    def edit(d):
        d["categories"]["E0101"] = {"policy": "patient", "start": "community"}

    assert book(edit).choose("E0101", "urgent") == Choice("urgent_safety", "community", True)


# -- snapshots ----------------------------------------------------------------------------------


def test_snapshot_of_a_compound_category_on_the_standard_policy():
    assert snapshot("E0101") == {
        "name": "standard",
        "version": "2026.1",
        "severity": "normal",
        "start": "compound",
        "steps": STANDARD,
        "whistle": WHISTLE,
    }


def test_the_first_step_carries_the_catalogues_deadlines():
    snap = snapshot("C0101")  # 路灯: compound, 1h / 2wd in the catalogue
    assert snap["steps"][0] == {**STANDARD[0], "report_in": "1h", "resolve": "2wd"}
    assert snap["steps"][1:] == STANDARD[1:]


def test_a_category_policy_starts_at_the_categorys_tier():
    snap = snapshot("E0402")  # 消防通道堵塞: community, urgent_safety; 30m / 4wh in the catalogue
    assert (snap["name"], snap["start"], snap["severity"]) == ("urgent_safety", "community",
                                                               "normal")
    assert snap["steps"] == [
        {"tier": "community", "notify": ALL, "report_in": "30m", "resolve": "4wh", "repeat": 0},
        {"tier": "street", "notify": ALL, "report_in": "15m", "resolve": "2h", "repeat": 1},
        {"tier": "district", "notify": ["departments", "tier_owner"],
         "report_in": "15m", "resolve": "2h", "repeat": 3},
    ]


def test_a_street_category_has_two_steps():
    assert deadlines(snapshot("E0403")) == [  # 路面塌陷: street, 30m / 1d
        ("street", "30m", "1d", 1),
        ("district", "15m", "2h", 3),
    ]


def test_a_policy_chosen_by_severity_keeps_its_own_first_deadlines():
    snap = snapshot("E0801", "urgent")  # catalogue: compound, 1h / 1wd
    assert (snap["name"], snap["severity"], snap["start"]) == ("urgent_safety", "urgent",
                                                               "compound")
    assert deadlines(snap)[0] == ("compound", "10m", "1h", 0)
    assert deadlines(snapshot("E0801"))[0] == ("compound", "1h", "1wd", 2)  # patient, normal


def test_the_global_severity_rule_also_keeps_the_policys_deadlines():
    snap = snapshot("E0402", "urgent")
    assert snap["name"] == "urgent_safety"
    assert deadlines(snap)[0] == ("community", "10m", "1h", 0)


def test_a_rule_start_moves_the_starting_tier():
    def edit(d):
        d["categories"]["E0101"] = {"start": "street"}

    snap = snapshot("E0101", policies=book(edit))
    assert snap["start"] == "street"
    assert deadlines(snap) == [
        ("street", "30m", "4wh", 2),  # the category's deadlines on the policy's step
        ("district", "1h", "3wd", 3),
    ]


def test_a_rule_start_may_also_move_down():
    def edit(d):
        d["categories"]["E0402"] = {"policy": "urgent_safety", "start": "area"}

    snap = snapshot("E0402", policies=book(edit))
    assert snap["start"] == "area"
    assert tiers(snap) == ["area", "community", "street", "district"]


def test_a_four_level_grid_drops_the_area_step():
    snap = snapshot("E0101", grid=GRID4)
    assert snap["start"] == "compound"
    assert snap["steps"] == [STANDARD[0], *STANDARD[2:]]


def test_an_area_category_starts_at_the_community_on_a_four_level_grid():
    snap = snapshot("E0102", grid=GRID4)  # 污水横流: area, 30m / 4wh
    assert snap["start"] == "community"
    assert deadlines(snap) == [
        ("community", "30m", "4wh", 1),
        ("street", "1h", "2wd", 2),
        ("district", "1h", "3wd", 3),
    ]
    assert tiers(snapshot("E0102")) == ["area", "community", "street", "district"]


def test_a_rule_start_at_area_on_a_four_level_grid_is_the_community():
    def edit(d):
        d["categories"]["E0101"] = {"start": "area"}

    snap = snapshot("E0101", grid=GRID4, policies=book(edit))
    assert snap["start"] == "community"
    assert tiers(snap) == ["community", "street", "district"]


def test_an_urgent_snapshot_on_a_four_level_grid():
    snap = snapshot("E0801", "urgent", grid=GRID4)
    assert deadlines(snap) == [
        ("compound", "10m", "1h", 0),
        ("community", "10m", "1h", 0),
        ("street", "15m", "2h", 1),
        ("district", "15m", "2h", 3),
    ]


def test_a_policy_without_the_starting_tier_is_an_error():
    def edit(d):
        d["policies"]["high"] = {"steps": [
            {"tier": "street", "report_in": "1h", "resolve": "1wd"},
            {"tier": "district", "report_in": "1h", "resolve": "1wd"},
        ]}
        d["categories"]["E0101"] = {"policy": "high"}

    with pytest.raises(PolicyError, match="policy 'high' has no step for the starting tier "
                                          "'compound'"):
        snapshot("E0101", policies=book(edit))


def test_a_policy_that_only_has_tiers_the_grid_lacks_is_an_error():
    def edit(d):
        d["policies"]["areas"] = {"steps": [
            {"tier": "area", "report_in": "1h", "resolve": "1wd"},
        ]}
        d["categories"]["E0102"] = {"policy": "areas"}

    b = book(edit)
    assert tiers(snapshot("E0102", policies=b)) == ["area"]
    with pytest.raises(PolicyError, match="policy 'areas' has no step"):
        snapshot("E0102", grid=GRID4, policies=b)


def test_snapshot_carries_the_whistle_terms():
    assert snapshot("E0402")["whistle"] == WHISTLE
    assert snapshot("E0101", grid=GRID4)["whistle"] == WHISTLE


def test_snapshot_is_plain_json():
    for snap in (snapshot("E0402"), snapshot("E0801", "urgent", grid=GRID4)):
        assert json.loads(json.dumps(snap)) == snap


def test_a_snapshot_is_a_copy_that_later_edits_of_the_book_leave_alone():
    b = book()
    snap = snapshot("E0402", policies=b)
    before = copy.deepcopy(snap)
    b.version = "2027.1"
    b.policies["urgent_safety"] = Policy("urgent_safety", (
        Step("community", ("tier_owner",), Duration(1, "days"), Duration(9, "days"), 9),
    ))
    b.whistle["hard"] = WhistleTerms("hard", Duration(1, "days"), Duration(9, "days"), None)
    b.categories["E0402"]["normal"] = Choice("patient", None)
    assert snap == before
    assert snapshot("E0402", policies=b)["version"] == "2027.1"  # the book did change


def test_editing_a_snapshot_leaves_the_book_and_other_snapshots_alone():
    b = book()
    first = snapshot("E0402", policies=b)
    first["steps"][0]["notify"].append("mayor")
    first["steps"][1]["repeat"] = 7
    first["whistle"]["hard"]["raise_to"] = None
    second = snapshot("E0402", policies=b)
    assert second["steps"][0]["notify"] == ALL
    assert second["steps"][1]["repeat"] == 1
    assert second["whistle"]["hard"]["raise_to"] == "district"
    assert b.policies["urgent_safety"].steps[3].repeat == 1


# -- reading a snapshot -------------------------------------------------------------------------


def test_step_duration():
    snap = snapshot("E0101")
    assert step_duration(snap, 0, "report_in") == Duration(30, "minutes")
    assert step_duration(snap, 0, "resolve") == Duration(4, "working_hours")
    assert step_duration(snap, 2, "resolve") == Duration(1, "working_days")
    assert step_duration(snap, 4, "report_in") == Duration(1, "hours")


def test_whistle_terms():
    snap = snapshot("E0402")
    assert whistle_terms(snap, "hard") == WHISTLE["hard"]
    assert whistle_terms(snap, "routine")["raise_to"] is None


@pytest.mark.parametrize(
    ("tier", "step"),
    [
        ("community", 0),
        ("street", 1),
        ("district", 2),
        ("area", 0),  # below the start: the first step
        ("compound", 0),
    ],
)
def test_step_of_tier_on_a_community_path(tier, step):
    assert step_of_tier(snapshot("E0402"), tier) == step


def test_step_of_tier_on_a_full_path():
    snap = snapshot("E0101")
    assert [step_of_tier(snap, t) for t in
            ("compound", "area", "community", "street", "district")] == [0, 1, 2, 3, 4]


def test_step_of_tier_on_a_four_level_path_maps_area_to_the_community():
    snap = snapshot("E0101", grid=GRID4)
    assert step_of_tier(snap, "area") == 1
    assert tiers(snap)[1] == "community"
    assert step_of_tier(snap, "district") == 3


def test_step_of_tier_above_a_short_path_is_its_top_step():
    snap = {"steps": [{"tier": "compound"}, {"tier": "area"}, {"tier": "community"}]}
    assert step_of_tier(snap, "district") == 2
    assert step_of_tier(snap, "street") == 2
    assert step_of_tier(snap, "area") == 1
