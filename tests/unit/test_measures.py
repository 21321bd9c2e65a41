"""The measures' definitions (响应率 / 解决率 / 满意率 / 按期结案率 / 返工率), the funnel's stages
and the filters, as plain Python; the SQL that counts is in tests/service/test_intake_queries.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from services.intake import measures as m
from services.intake.cases import Case, CaseState
from services.intake.loop import UNSATISFIED_SCORE
from services.intake.queries import within
from shared.db import next_prefix
from shared.reference import load_reference

REF = load_reference(Path(__file__).resolve().parents[2] / "deploy" / "demo")
T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


# -- rates -----------------------------------------------------------------------------------
def test_a_rate_is_numerator_over_denominator_and_none_without_a_denominator() -> None:
    assert m.rate(3, 4) == 0.75
    assert m.rate(0, 4) == 0.0
    assert m.rate(4, 4) == 1.0
    assert m.rate(0, 0) is None
    with pytest.raises(ValueError, match="part of its denominator"):
        m.rate(5, 4)
    with pytest.raises(ValueError, match="not negative"):
        m.rate(-1, 4)
    with pytest.raises(ValueError):
        m.rate(1, 0)


@pytest.mark.parametrize(("make", "name", "zh"), [
    (m.response_rate, "response_rate", "响应率"),
    (m.resolution_rate, "resolution_rate", "解决率"),
    (m.satisfaction_rate, "satisfaction_rate", "满意率"),
    (m.on_time_closing_rate, "on_time_closing_rate", "按期结案率"),
    (m.rework_rate, "rework_rate", "返工率"),
])
def test_every_measure_carries_its_counts_and_name(make: Any, name: str, zh: str) -> None:
    r = make(2, 3)
    assert (r.name, r.numerator, r.denominator) == (name, 2, 3)
    assert r.as_dict() == {"name_zh": zh, "numerator": 2, "denominator": 3, "value": 0.6667}
    assert make(0, 0).as_dict() == {"name_zh": zh, "numerator": 0, "denominator": 0,
                                    "value": None}
    assert make(0, 7).as_dict()["value"] == 0.0
    assert json.loads(json.dumps(make(1, 3).as_dict()))["value"] == 0.3333
    assert make.__doc__ and zh in make.__doc__  # the definition is written down


def test_satisfied_is_exactly_what_does_not_reopen_a_case() -> None:
    assert UNSATISFIED_SCORE == 2
    table = {(5, None): True, (4, True): True, (3, None): True, (3, True): True,
             (2, None): False, (1, True): False, (5, False): False, (3, False): False}
    for (score, fixed), satisfied in table.items():
        assert m.is_satisfied(score, fixed) is satisfied, (score, fixed)
    # the domain agrees: a rating reopens (where allowed) exactly when it is not satisfied
    for score in range(1, 6):
        for fixed in (True, False, None):
            case = _closed_case()
            reopened = case.rate(score=score, fixed=fixed, comment="", reporter_id="gw-1",
                                 may_reopen=True, at=T0 + timedelta(hours=1))
            assert reopened is not m.is_satisfied(score, fixed), (score, fixed)


def _closed_case() -> Case:
    case = Case("20261123-000001", category="E0101", grid_code="511802001001101",
                description="暴露垃圾", reporter={"kind": "grid_worker", "id": "gw-1"},
                reported_at=T0)
    case.routed({"tier": "compound", "code": "511802001001101"}, [
        {"department": "sanitation", "role": "lead", "report_in_due": T0, "resolve_due": T0}],
        T0)
    case.state, case.closed_at, case.rate_until = CaseState.CLOSED, T0, T0 + timedelta(days=7)
    return case


def test_handling_time_is_a_mean_and_a_median_in_hours() -> None:
    assert m.handling_time(0, None, None) == {"closed": 0, "average_hours": None,
                                              "median_hours": None}
    assert m.handling_time(0, 0.0, None)["average_hours"] is None
    out = m.handling_time(3, 3600 * 1 + 3600 * 2 + 3600 * 10, 7200)
    assert out == {"closed": 3, "average_hours": 4.33, "median_hours": 2.0}
    assert m.hours(90) == 0.03 and m.hours(None) is None
    assert m.median_offsets(0) == (0, 0)
    assert m.median_offsets(1) == (0, 1)
    assert m.median_offsets(2) == (0, 2)
    assert m.median_offsets(5) == (2, 1)
    assert m.median_offsets(6) == (2, 2)
    assert m.median_of([3.0, 5.0]) == 4.0 and m.median_of([7.0]) == 7.0
    assert m.median_of([]) is None


# -- summing what the database counted ------------------------------------------------------
def test_the_cohort_leaves_duplicates_out_and_counts_rework_of_cases_back_at_work() -> None:
    rows = [
        ("E0101", CaseState.CLOSED, False, 4),
        ("E0101", CaseState.CLOSED, True, 1),  # reworked, closed again
        ("E0101", CaseState.DISPATCHED, True, 2),  # reworked, back at work
        ("E0402", CaseState.RESOLVED, False, 3),
        ("E0402", CaseState.IN_PROGRESS, False, 5),
        ("E0402", CaseState.DUPLICATE, False, 6),
        ("E0505", CaseState.REPORTED, False, 1),
    ]
    c = m.cohort_of(rows)
    assert (c.reported, c.duplicates) == (16, 6)
    assert c.resolved_or_later == 8  # 4 + 1 closed, 3 resolved
    assert (c.reworked, c.rework_base) == (3, 10)  # 8 resolved or later + 2 back at work
    assert c.by_category == {"E0101": 7, "E0402": 8, "E0505": 1}
    assert m.resolution_rate(c.resolved_or_later, c.reported).value == 0.5
    assert m.rework_rate(c.reworked, c.rework_base).value == 0.3
    empty = m.cohort_of([])
    assert (empty.reported, empty.rework_base, empty.by_category) == (0, 0, {})
    assert m.RESOLVED_OR_LATER == (CaseState.RESOLVED, CaseState.CLOSED)
    assert set(m.RESOLVED_OR_LATER) <= set(CaseState.ALL)


def test_top_categories_rank_by_cases_then_code_with_catalogue_names() -> None:
    top = m.top_categories({"E0402": 2, "E0101": 5, "E0505": 2, "X9999": 1}, REF.catalogue, 3)
    assert top == [
        {"code": "E0101", "name": "暴露垃圾", "major": "市容环境", "count": 5},
        {"code": "E0402", "name": "消防通道堵塞", "major": "突发事件", "count": 2},
        {"code": "E0505", "name": "噪音扰民", "major": "街面秩序", "count": 2},
    ]
    assert m.top_categories({"X9999": 1}, REF.catalogue)[0] == {
        "code": "X9999", "name": "", "major": "", "count": 1}
    assert m.top_categories({}, REF.catalogue) == []


def test_tier_split_lists_every_tier_of_the_grid_bottom_first() -> None:
    tiers = REF.grid.levels.tiers()
    split = m.tier_split({"street": 2, "compound": 5, None: 1}, tiers)
    assert split == {"compound": 5, "area": 0, "community": 0, "street": 2, "district": 0,
                     "unrouted": 1}
    assert list(split)[:5] == ["compound", "area", "community", "street", "district"]
    assert m.tier_split({}, tiers) == dict.fromkeys(tiers, 0)


def test_department_rows_give_each_department_its_response_rate() -> None:
    rows = m.department_rows(REF.catalogue, assignments={"fire": 3, "police": 1},
                             due={"fire": (2, 1), "gas": (1, 1)}, resolved={"fire": (2, 2)})
    assert rows == [
        {"department": "fire", "name": REF.catalogue.departments["fire"].name,
         "assignments": 3, "due": 2, "reported_in_on_time": 1, "response_rate": 0.5,
         "resolved": 2, "resolved_on_time": 2},
        {"department": "gas", "name": REF.catalogue.departments["gas"].name, "assignments": 0,
         "due": 1,
         "reported_in_on_time": 1, "response_rate": 1.0, "resolved": 0, "resolved_on_time": 0},
        {"department": "police", "name": REF.catalogue.departments["police"].name,
         "assignments": 1, "due": 0, "reported_in_on_time": 0, "response_rate": None,
         "resolved": 0, "resolved_on_time": 0},
    ]


def test_the_funnel_counts_the_cases_that_reached_each_stage() -> None:
    by_state = dict.fromkeys(CaseState.ALL, 0) | {
        CaseState.REPORTED: 1, CaseState.ROUTED: 2, CaseState.RETURNED: 1,
        CaseState.DISPATCHED: 3, CaseState.ACKNOWLEDGED: 4, CaseState.IN_PROGRESS: 5,
        CaseState.RESOLVED: 6, CaseState.CLOSED: 7, CaseState.DUPLICATE: 100}
    assert [(s["stage"], s["cases"]) for s in m.stages(by_state)] == [
        ("reported", 29), ("routed", 28), ("dispatched", 25), ("acknowledged", 22),
        ("resolved", 13), ("closed", 7)]
    assert all(s["cases"] == 0 for s in m.stages({}))
    assert m.is_open(CaseState.RETURNED) and not m.is_open(CaseState.RESOLVED)
    assert not m.is_open(CaseState.DUPLICATE)


def test_breadcrumbs_run_from_the_district_down() -> None:
    node = REF.grid.get("5118020010011")
    assert node is not None
    assert [(n["code"], n["name"], n["level"], n["level_zh"]) for n in m.breadcrumbs(node)] == [
        ("511802", "雨城区", "district", "区"), ("511802001", "青江街道", "street", "街道"),
        ("511802001001", "桐梓林社区", "community", "社区"),
        ("5118020010011", "桐梓林一片区", "area", "片区")]


# -- filters ---------------------------------------------------------------------------------
def test_filters_are_a_half_open_period_of_aware_datetimes() -> None:
    f = m.Filters(since=T0, until=T0 + timedelta(days=1))
    assert f.in_period(T0) and f.in_period(T0 + timedelta(hours=23))
    assert not f.in_period(T0 + timedelta(days=1)) and not f.in_period(T0 - timedelta(seconds=1))
    assert not f.in_period(None)
    assert m.Filters().in_period(T0)
    assert f.as_dict() == {"since": "2026-11-23T01:00:00+00:00",
                           "until": "2026-11-24T01:00:00+00:00", "grid": None,
                           "department": None}
    with pytest.raises(m.InvalidFilters) as err:
        m.Filters(since=datetime(2026, 11, 23))
    assert set(err.value.errors) == {"since"}
    assert "since" in json.loads(str(err.value))
    with pytest.raises(m.InvalidFilters) as err:
        m.Filters(since=T0, until=T0)
    assert set(err.value.errors) == {"until"}


def test_queries_load_iso_text_and_name_the_field_they_refuse() -> None:
    q = m.CasesQuery().load({"since": "2026-11-23T09:00:00+08:00", "until": None,
                             "grid": "511802001", "state": "open", "tier": "unrouted",
                             "limit": 500, "offset": 0})
    assert q == {"since": T0, "grid": "511802001", "state": "open", "tier": "unrouted",
                 "limit": 500, "offset": 0}
    assert q["since"].utcoffset() == timezone(timedelta(hours=8)).utcoffset(None)
    assert m.MeasuresQuery().load({"top": 5}) == {"top": 5}
    assert m.FunnelQuery().load({}) == {}
    for schema, raw, field in [
        (m.FunnelQuery, {"since": "2026-11-23T09:00:00"}, "since"),  # no offset
        (m.FunnelQuery, {"since": "soon"}, "since"),
        (m.FunnelQuery, {"since": "2026-11-24T00:00:00Z", "until": "2026-11-23T00:00:00Z"},
         "until"),
        (m.FunnelQuery, {"grid": "5118 02"}, "grid"),
        (m.FunnelQuery, {"department": ""}, "department"),
        (m.FunnelQuery, {"top": 3}, "top"),  # the funnel has no top
        (m.MeasuresQuery, {"top": 51}, "top"),
        (m.CasesQuery, {"state": "lost"}, "state"),
        (m.CasesQuery, {"tier": "building"}, "tier"),
        (m.CasesQuery, {"limit": 0}, "limit"),
        (m.CasesQuery, {"offset": -1}, "offset"),
    ]:
        with pytest.raises(ValidationError) as err:
            schema().load(raw)
        assert set(err.value.messages) == {field}, (raw, err.value.messages)


def test_filters_name_an_unknown_grid_node_or_department() -> None:
    f = m.filters_from({"since": T0, "grid": "511802001", "department": "fire"}, REF.grid,
                       REF.catalogue)
    assert f == m.Filters(since=T0, grid="511802001", department="fire")
    with pytest.raises(ValidationError) as err:
        m.filters_from({"grid": "511802009", "department": "nobody"}, REF.grid, REF.catalogue)
    assert set(err.value.messages) == {"grid", "department"}


def test_a_grid_subtree_is_a_range_of_codes() -> None:
    assert next_prefix("511802001") == "511802002"
    assert next_prefix("5118029") == "511803"
    assert next_prefix("51189999") == "5119"
    assert next_prefix("999") is None
    codes = [c.code for c in REF.grid.cells]
    for node in REF.grid.nodes():
        upper = next_prefix(node.code)
        inside = {c for c in codes if node.code <= c and (upper is None or c < upper)}
        assert inside == {c for c in codes if c.startswith(node.code)}, node.code
    assert within(None) == []
    assert len(within("511802001")) == 2  # a range on the cell code
    assert len(within("511802001001101")) == 1  # a cell: equal
    assert "building_code" in str(within("511802001001101001")[0])  # a building
