"""The grid registry: the demo district and the validation of grid data."""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path

import pytest

from shared.grid import CELL_CODE_LENGTH, GridError, GridNode, GridRegistry
from shared.reference import load_reference

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"


def demo_grid() -> GridRegistry:
    return load_reference(DEMO).grid


def by_level(grid: GridRegistry, level: str) -> list[GridNode]:
    return [n for n in grid.nodes() if n.level == level]


def by_name(grid: GridRegistry, name: str) -> GridNode:
    found = [n for n in grid.nodes() if n.name == name]
    assert len(found) == 1, f"{name}: {len(found)} nodes"
    return found[0]


def centroid(polygon) -> tuple[float, float]:
    xs = [p[0] for p in polygon]
    ys = [p[1] for p in polygon]
    return sum(xs) / len(xs), sum(ys) / len(ys)


def bbox(polygon) -> tuple[float, float, float, float]:
    xs = [p[0] for p in polygon]
    ys = [p[1] for p in polygon]
    return min(xs), min(ys), max(xs), max(ys)


# -- the demo district ---------------------------------------------------------------------


def test_demo_district_shape():
    grid = demo_grid()
    assert grid.root.code == "511802"
    assert grid.root.name == "雨城区"
    assert grid.root.level == "district"
    assert grid.levels.names == ("district", "street", "community", "area", "compound", "building")
    assert grid.levels.cell_level == "compound"
    assert grid.version
    assert len(by_level(grid, "street")) >= 2
    assert len(by_level(grid, "community")) >= 4
    assert len(grid.cells) >= 12
    assert {c.code for c in grid.cells} == {c.code for c in by_level(grid, "compound")}
    for community in by_level(grid, "community"):
        assert community.children, f"{community.name} has no areas"
        assert all(a.level == "area" for a in community.children)
    for area in by_level(grid, "area"):
        assert area.children, f"{area.name} has no compounds"
    for compound in grid.cells:
        assert 2 <= len(compound.children) <= 4, compound.name
        assert all(b.level == "building" for b in compound.children)


def test_demo_named_places_sit_where_the_press_reports_put_them():
    grid = demo_grid()
    expected = {
        "通工小区": ["雨城区", "青江街道", "桐梓林社区"],
        "汉都华府小区": ["雨城区", "青江街道", "桐梓林社区"],
        "新安巷大院": ["雨城区", "河北街道", "康藏路社区"],
    }
    for compound, ancestors in expected.items():
        node = by_name(grid, compound)
        assert node.level == "compound"
        path = [n.name for n in node.path()]
        assert path[:3] == ancestors
        assert path[-1] == compound
    assert by_name(grid, "桐梓林社区").parent.name == "青江街道"
    assert by_name(grid, "康藏路社区").parent.name == "河北街道"


def test_demo_codes_are_hierarchical_and_sized():
    grid = demo_grid()
    sizes = {
        "district": 6,
        "street": 9,
        "community": 12,
        "area": 13,
        "compound": 15,
        "building": 18,
    }
    for node in grid.nodes():
        assert re.fullmatch(r"\d+", node.code)
        assert len(node.code) == sizes[node.level], node.code
        if node.parent is not None:
            assert node.code.startswith(node.parent.code)
            assert node.parent_code == node.parent.code
    assert all(len(c.code) == CELL_CODE_LENGTH for c in grid.cells)


def test_demo_every_node_has_an_owner_and_every_cell_a_grid_worker():
    grid = demo_grid()
    for node in grid.nodes():
        assert node.owner.name, node.code
        assert node.owner.role, node.code
    worker_ids = [c.owner.id for c in grid.cells]
    assert all(re.fullmatch(r"gw-\d{4}", i) for i in worker_ids)
    assert len(set(worker_ids)) == len(worker_ids)
    assert all(c.owner.role == "网格员" for c in grid.cells)
    assert all(re.fullmatch(r"1\d{10}", c.owner.phone) for c in grid.cells)


def test_demo_cell_polygons_are_in_yucheng_and_do_not_overlap():
    grid = demo_grid()
    boxes = []
    for cell in grid.cells:
        assert cell.polygon is not None and len(cell.polygon) >= 4, cell.name
        x0, y0, x1, y1 = bbox(cell.polygon)
        assert 102.99 <= x0 < x1 <= 103.05, cell.name
        assert 29.97 <= y0 < y1 <= 30.02, cell.name
        boxes.append((cell.name, (x0, y0, x1, y1)))
    for i, (na, a) in enumerate(boxes):
        for nb, b in boxes[i + 1 :]:
            disjoint = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert disjoint, f"{na} overlaps {nb}"


def test_demo_building_polygons_lie_inside_their_compound():
    grid = demo_grid()
    for cell in grid.cells:
        cx0, cy0, cx1, cy1 = bbox(cell.polygon)
        for building in cell.children:
            if building.polygon is None:
                continue
            x0, y0, x1, y1 = bbox(building.polygon)
            assert cx0 <= x0 < x1 <= cx1 and cy0 <= y0 < y1 <= cy1, building.code
            assert cell.contains(*centroid(building.polygon))


def test_as_dict_depth():
    grid = demo_grid()
    d = grid.root.as_dict(depth=1)
    assert d["code"] == "511802" and d["parent"] is None
    assert d["owner"]["role"]
    assert [s["code"] for s in d["children"]] == [s.code for s in grid.root.children]
    assert all("children" not in s for s in d["children"])
    cell = grid.get("511802001001101")
    cd = cell.as_dict(depth=0)
    assert cd["name"] == "通工小区" and cd["parent"] == "5118020010011"
    assert cd["polygon"][0] == list(cell.polygon[0])


# -- cell_for_code ---------------------------------------------------------------------------


def test_cell_for_code_with_a_cell_code():
    grid = demo_grid()
    cell, building = grid.cell_for_code("511802001001101")
    assert cell.name == "通工小区"
    assert building is None


def test_cell_for_code_with_a_building_code():
    grid = demo_grid()
    building_node = grid.get("511802001001101")
    first = building_node.children[0]
    cell, building = grid.cell_for_code(first.code)
    assert cell is building_node
    assert building is first
    assert building.level == "building"


def test_cell_for_code_rejects_unknown_and_upper_codes():
    grid = demo_grid()
    with pytest.raises(GridError, match="unknown"):
        grid.cell_for_code("511802001001199")
    with pytest.raises(GridError, match="community"):
        grid.cell_for_code("511802001001")
    with pytest.raises(GridError):
        grid.cell_for_code("511802")
    with pytest.raises(GridError):
        grid.cell_for_code("5118020010011")  # an area


# -- locate ----------------------------------------------------------------------------------


def test_locate_finds_each_compound_at_its_centroid():
    grid = demo_grid()
    for cell in grid.cells:
        lng, lat = centroid(cell.polygon)
        found = grid.locate(lat, lng)
        assert found is cell, f"{cell.name}: got {found and found.name}"


def test_locate_returns_none_outside():
    grid = demo_grid()
    assert grid.locate(29.90, 103.10) is None
    assert grid.locate(0.0, 0.0) is None
    assert grid.locate(-29.98, -103.0) is None
    # just east of 通工小区, in the gap before 汉都华府小区
    tonggong = by_name(grid, "通工小区")
    _x0, y0, x1, y1 = bbox(tonggong.polygon)
    assert grid.locate((y0 + y1) / 2, x1 + 1e-4) is None


def test_locate_agrees_with_brute_force():
    grid = demo_grid()
    rng = random.Random(511802)
    hits = 0
    for _ in range(2000):
        lng = rng.uniform(102.99, 103.05)
        lat = rng.uniform(29.97, 30.02)
        expected = [c for c in grid.cells if c.contains(lng, lat)]
        assert len(expected) <= 1
        found = grid.locate(lat, lng)
        assert found is (expected[0] if expected else None)
        hits += bool(expected)
    assert hits > 20  # the sample really exercises hits, not only misses


# -- tiers on the 5-level demo ---------------------------------------------------------------


def test_tiers_on_the_five_level_demo():
    grid = demo_grid()
    cell = grid.get("511802002001101")  # 新安巷大院
    assert grid.levels.tiers() == ("compound", "area", "community", "street", "district")
    assert grid.tier_node(cell, "compound") is cell
    assert grid.tier_node(cell, "area").name == "新安巷片区"
    assert grid.tier_node(cell, "community").name == "康藏路社区"
    assert grid.tier_node(cell, "street").name == "河北街道"
    assert grid.tier_node(cell, "district") is grid.root
    assert grid.next_tier("compound") == "area"
    assert grid.next_tier("area") == "community"
    assert grid.next_tier("street") == "district"
    assert grid.next_tier("district") is None
    with pytest.raises(GridError):
        grid.tier_node(cell, "city")


# -- a 4-level grid built inline ---------------------------------------------------------------


def owner(name: str = "测试员", role: str = "网格员") -> dict:
    return {"name": name, "role": role}


def four_level() -> dict:
    def square(x: float, y: float) -> list[list[float]]:
        return [[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1]]

    return {
        "version": "t",
        "levels": [
            {"name": "district", "digits": 6},
            {"name": "street", "digits": 3},
            {"name": "community", "digits": 3},
            {"name": "compound", "digits": 3},
            {"name": "building", "digits": 3},
        ],
        "cell_level": "compound",
        "district": {
            "code": "110101",
            "name": "D",
            "owner": owner("区", "区中心"),
            "children": [
                {
                    "code": "110101001",
                    "name": "S",
                    "owner": owner("街", "街道"),
                    "children": [
                        {
                            "code": "110101001001",
                            "name": "C",
                            "owner": owner("社", "社区"),
                            "children": [
                                {
                                    "code": "110101001001001",
                                    "name": "X1",
                                    "owner": owner(),
                                    "polygon": square(0, 0),
                                    "children": [
                                        {
                                            "code": "110101001001001001",
                                            "name": "1栋",
                                            "owner": {"role": "楼栋长"},
                                        }
                                    ],
                                },
                                {
                                    "code": "110101001001002",
                                    "name": "X2",
                                    "owner": owner(),
                                    "polygon": square(2, 0),
                                },
                            ],
                        }
                    ],
                }
            ],
        },
    }


def test_four_level_grid_loads():
    grid = GridRegistry.from_dict(four_level())
    assert len(grid) == 6
    assert [c.name for c in grid.cells] == ["X1", "X2"]
    assert grid.levels.tiers() == ("compound", "community", "street", "district")
    cell, building = grid.cell_for_code("110101001001001001")
    assert (cell.name, building.name) == ("X1", "1栋")
    assert grid.locate(0.5, 0.5).name == "X1"
    assert grid.locate(0.5, 2.5).name == "X2"
    assert grid.locate(0.5, 1.5) is None


def test_four_level_grid_area_tier_falls_to_community():
    grid = GridRegistry.from_dict(four_level())
    cell = grid.get("110101001001002")
    assert grid.tier_node(cell, "area").code == "110101001001"
    assert grid.tier_node(cell, "area").level == "community"
    assert grid.tier_node(cell, "compound") is cell
    assert grid.tier_node(cell, "street").code == "110101001"
    assert grid.normalise_tier("area") == "community"
    assert grid.normalise_tier("community") == "community"
    assert grid.next_tier("compound") == "community"
    assert grid.next_tier("area") == "street"
    assert grid.next_tier("community") == "street"
    assert grid.next_tier("street") == "district"
    assert grid.next_tier("district") is None


# -- validation errors -----------------------------------------------------------------------


def _street(data: dict) -> dict:
    return data["district"]["children"][0]


def _community(data: dict) -> dict:
    return _street(data)["children"][0]


def test_the_inline_fixture_is_valid():
    GridRegistry.from_dict(copy.deepcopy(four_level()))


def test_wrong_number_of_digits():
    data = four_level()
    _street(data)["code"] = "11010101"
    with pytest.raises(GridError, match="9 digits"):
        GridRegistry.from_dict(data)
    data = four_level()
    _community(data)["children"][1]["code"] = "1101010010012"
    with pytest.raises(GridError, match="15 digits"):
        GridRegistry.from_dict(data)


def test_non_digit_code():
    data = four_level()
    _street(data)["code"] = "11010100A"
    with pytest.raises(GridError):
        GridRegistry.from_dict(data)


def test_wrong_prefix():
    data = four_level()
    _community(data)["code"] = "110101002001"
    with pytest.raises(GridError, match="parent"):
        GridRegistry.from_dict(data)


def test_missing_owner():
    data = four_level()
    del _community(data)["owner"]
    with pytest.raises(GridError, match="owner"):
        GridRegistry.from_dict(data)
    data = four_level()
    _street(data)["owner"] = {"name": "", "role": "", "phone": "13800000000"}
    with pytest.raises(GridError, match="owner"):
        GridRegistry.from_dict(data)


def test_levels_out_of_order():
    data = four_level()
    data["levels"][1], data["levels"][2] = data["levels"][2], data["levels"][1]
    with pytest.raises(GridError, match="out of order"):
        GridRegistry.from_dict(data)


def test_unknown_level_and_first_level():
    data = four_level()
    data["levels"][3]["name"] = "block"
    with pytest.raises(GridError, match="unknown level"):
        GridRegistry.from_dict(data)
    data = four_level()
    data["levels"] = data["levels"][1:]
    data["levels"][0]["digits"] = 9
    with pytest.raises(GridError, match="district"):
        GridRegistry.from_dict(data)


def test_digits_must_add_up_to_fifteen():
    data = four_level()
    data["levels"][3]["digits"] = 2
    with pytest.raises(GridError, match="15"):
        GridRegistry.from_dict(data)
    # adding an area level without taking digits from the compound makes 16
    data = four_level()
    data["levels"].insert(3, {"name": "area", "digits": 1})
    with pytest.raises(GridError, match="15"):
        GridRegistry.from_dict(data)


def test_cell_level_must_be_a_level():
    data = four_level()
    data["cell_level"] = "area"
    with pytest.raises(GridError, match="cell_level"):
        GridRegistry.from_dict(data)


def test_deeper_than_levels():
    data = four_level()
    building = _community(data)["children"][0]["children"][0]
    building["children"] = [{"code": "110101001001001001001", "name": "室", "owner": owner()}]
    with pytest.raises(GridError, match="deeper"):
        GridRegistry.from_dict(data)


def test_duplicate_code():
    data = four_level()
    _community(data)["children"][1]["code"] = "110101001001001"
    with pytest.raises(GridError, match="duplicate"):
        GridRegistry.from_dict(data)


def test_degenerate_polygon():
    data = four_level()
    _community(data)["children"][1]["polygon"] = [[0, 0], [1, 1]]
    with pytest.raises(GridError, match="polygon"):
        GridRegistry.from_dict(data)
