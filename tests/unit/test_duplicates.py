"""Is a new report the same problem as an open case? Distances, the place of a report (its
point, or the middle of its building or cell), and the nearest open case within a radius."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.intake.duplicates import (
    EARTH_RADIUS_M,
    Candidate,
    centroid,
    distance_m,
    nearest,
    place_of,
)
from shared.grid import GridRegistry
from shared.reference import load_reference
from support import four_level_grid

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"
GRID = load_reference(DEMO).grid

TONGGONG = "511802001001101"  # 通工小区: lng 102.996–103.001, lat 29.972–29.975
TONGGONG_1 = "511802001001101001"  # 1栋: lng 102.99633–102.99733, lat 29.9729–29.9741
TONGGONG_MIDDLE = (29.9735, 102.9985)
BUILDING_1_MIDDLE = (29.9735, 102.99683)
METRES_PER_MILLIDEGREE = EARTH_RADIUS_M * math.pi / 180 / 1000  # ≈ 111.19 m
HERE = (29.9735, 102.9985)


def demo_grid_data() -> dict[str, Any]:
    return yaml.safe_load((DEMO / "district.yaml").read_text(encoding="utf-8"))


def node_data(data: dict[str, Any], code: str) -> dict[str, Any]:
    """The node ``code`` in grid data, to edit before loading it."""
    stack = [data["district"]]
    while stack:
        node = stack.pop()
        if node["code"] == code:
            return node
        stack.extend(node.get("children", []))
    raise KeyError(code)


def grid_without_polygons(*codes: str, drawn: dict[str, list[list[float]]] | None = None
                          ) -> GridRegistry:
    """The demo grid with the polygons of ``codes`` removed (and ``drawn`` ones added)."""
    data = copy.deepcopy(demo_grid_data())
    for code in codes:
        del node_data(data, code)["polygon"]
    for code, polygon in (drawn or {}).items():
        node_data(data, code)["polygon"] = polygon
    return GridRegistry.from_dict(data)


def north(metres: float, of: tuple[float, float] = HERE) -> tuple[float, float]:
    """The point ``metres`` due north (along the meridian, where the haversine is exact)."""
    return of[0] + metres / METRES_PER_MILLIDEGREE / 1000, of[1]


# -- distance ------------------------------------------------------------------------------------


def test_a_thousandth_of_a_degree_of_latitude_is_about_111_metres():
    assert distance_m((29.9735, 102.9985), (29.9745, 102.9985)) == pytest.approx(111.19, abs=0.01)
    assert distance_m((0.0, 0.0), (0.001, 0.0)) == pytest.approx(METRES_PER_MILLIDEGREE,
                                                                 rel=1e-9)


def test_a_thousandth_of_a_degree_of_longitude_shrinks_with_the_latitude():
    at_equator = distance_m((0.0, 102.998), (0.0, 102.999))
    at_yaan = distance_m((30.0, 102.998), (30.0, 102.999))
    assert at_equator == pytest.approx(111.19, abs=0.01)
    assert at_yaan == pytest.approx(111.19 * math.cos(math.radians(30)), abs=0.01)  # ≈ 96.3 m


def test_distance_is_zero_to_itself_and_the_same_both_ways():
    a, b = (29.9735, 102.9985), (29.9769, 103.0005)
    assert distance_m(a, a) == 0.0
    assert distance_m(a, b) == distance_m(b, a)
    # 378.06 m north and 192.64 m east (cos 29.975° of 222.39 m): 424.31 m on the flat
    assert distance_m(a, b) == pytest.approx(424.31, abs=0.01)


def test_the_earth_radius_is_the_mean_radius():
    assert EARTH_RADIUS_M == 6_371_000.0


# -- centroid ------------------------------------------------------------------------------------


def test_the_middle_of_a_cell_is_lat_then_lng():
    polygon = [(102.996, 29.972), (103.001, 29.972), (103.001, 29.975), (102.996, 29.975)]
    assert centroid(polygon) == pytest.approx(TONGGONG_MIDDLE, abs=1e-12)


def test_the_centroid_is_the_vertex_average():
    triangle = [(0.0, 0.0), (3.0, 0.0), (0.0, 6.0)]  # (lng, lat)
    assert centroid(triangle) == (2.0, 1.0)


# -- where a report is ---------------------------------------------------------------------------


def test_a_report_with_a_point_is_at_its_point():
    assert place_of(29.98, 103.01, TONGGONG, GRID) == (29.98, 103.01)
    # even with a code nobody knows: the point is enough
    assert place_of(29.98, 103.01, "511802999999999", GRID) == (29.98, 103.01)


@pytest.mark.parametrize(("lat", "lng"), [(None, None), (29.98, None), (None, 103.01)])
def test_a_report_without_a_whole_point_is_in_the_middle_of_its_cell(lat, lng):
    assert place_of(lat, lng, TONGGONG, GRID) == pytest.approx(TONGGONG_MIDDLE, abs=1e-12)


def test_a_building_is_in_the_middle_of_its_own_polygon():
    assert place_of(None, None, TONGGONG_1, GRID) == pytest.approx(BUILDING_1_MIDDLE, abs=1e-12)


def test_a_building_without_a_polygon_is_in_the_middle_of_its_cell():
    grid = grid_without_polygons(TONGGONG_1)
    assert place_of(None, None, TONGGONG_1, grid) == pytest.approx(TONGGONG_MIDDLE, abs=1e-12)


def test_nothing_drawn_no_place():
    grid = four_level_grid()  # no polygons at all
    assert place_of(None, None, "511802001001001", grid) is None
    assert place_of(None, None, "511802001001001001", grid) is None


def test_the_place_is_looked_for_no_higher_than_the_cell():
    community = [[102.99, 29.97], [103.01, 29.97], [103.01, 29.99], [102.99, 29.99]]
    grid = grid_without_polygons(TONGGONG_1, TONGGONG, drawn={"511802001001": community})
    assert grid.get("511802001001").polygon is not None
    assert place_of(None, None, TONGGONG_1, grid) is None
    assert place_of(None, None, TONGGONG, grid) is None


def test_an_unknown_code_without_a_point_has_no_place():
    assert place_of(None, None, "511802999999999", GRID) is None


# -- the nearest open case within the radius ---------------------------------------------------


def test_the_nearest_candidate_within_the_radius_wins_with_its_distance():
    far, near = Candidate("c-far", *north(80)), Candidate("c-near", *north(30))
    found, distance = nearest(HERE, [far, near], 100.0)
    assert found == near
    assert distance == pytest.approx(30.0, abs=1e-6)


def test_a_candidate_beyond_the_radius_is_not_a_duplicate():
    assert nearest(HERE, [Candidate("c-1", *north(101))], 100.0) is None


def test_a_candidate_exactly_at_the_radius_is_a_duplicate():
    candidate = Candidate("c-1", *north(100))
    radius = distance_m(HERE, (candidate.lat, candidate.lng))
    assert nearest(HERE, [candidate], radius) == (candidate, radius)


def test_of_two_equally_near_candidates_the_first_wins():
    first, second = Candidate("c-1", *north(40)), Candidate("c-2", *north(40))
    assert nearest(HERE, [first, second], 100.0)[0] == first
    assert nearest(HERE, [second, first], 100.0)[0] == second


def test_no_candidates_no_duplicate():
    assert nearest(HERE, [], 100.0) is None
    assert nearest(HERE, iter(()), 100.0) is None


def test_candidates_may_come_from_a_generator():
    found = nearest(HERE, (Candidate(f"c-{m}", *north(m)) for m in (90, 10, 50)), 100.0)
    assert found[0].case_id == "c-10"


def test_a_zero_radius_finds_only_the_same_spot():
    same = Candidate("c-same", *HERE)
    assert nearest(HERE, [Candidate("c-1", *north(1)), same], 0.0) == (same, 0.0)
    assert nearest(HERE, [Candidate("c-1", *north(1))], 0.0) is None


def test_a_candidate_is_an_immutable_value():
    c = Candidate("c-1", 29.9735, 102.9985)
    assert c == Candidate("c-1", 29.9735, 102.9985)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lat = 0.0  # type: ignore[misc]
