"""The grid registry: district → street → community → (area) → compound → building.

Pure domain code. A grid is loaded from data (``deploy/demo/district.yaml``): which levels
a deployment uses, how many code digits each level adds, and which level is the patrolled
*cell* (its code is always 15 digits: 6 division + 3 street + 3 community + 3 cell).

Codes are hierarchical: a child's code is its parent's code plus that level's digits, so
"is X inside Y" is a prefix test and a grid subtree filter is ``code LIKE 'Y%'``.
Polygons are lists of ``[lng, lat]`` pairs (GeoJSON order).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Every level a deployment may use, top to bottom. Tiers of response use the same names.
CANONICAL_LEVELS: tuple[str, ...] = (
    "district",
    "street",
    "community",
    "area",
    "compound",
    "building",
)
CELL_CODE_LENGTH = 15
_DIGITS = re.compile(r"^[0-9]+$")
LEVEL_NAMES_ZH = {
    "district": "区",
    "street": "街道",
    "community": "社区",
    "area": "片区",
    "compound": "小区",
    "building": "楼栋",
}


class GridError(ValueError):
    """The grid data is inconsistent, or a code / point does not resolve."""


@dataclass(frozen=True)
class Owner:
    """Who answers for a grid node: a named person, a role, or both."""

    name: str
    role: str = ""
    id: str = ""
    phone: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "role": self.role, "phone": self.phone}


@dataclass(eq=False)
class GridNode:
    code: str
    name: str
    level: str
    owner: Owner
    parent: GridNode | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    children: list[GridNode] = field(default_factory=list)

    @property
    def parent_code(self) -> str | None:
        return self.parent.code if self.parent else None

    def ancestors(self) -> Iterator[GridNode]:
        """This node, then its parent, up to the root."""
        node: GridNode | None = self
        while node is not None:
            yield node
            node = node.parent

    def path(self) -> list[GridNode]:
        """Root first, this node last."""
        return list(reversed(list(self.ancestors())))

    def contains(self, lng: float, lat: float) -> bool:
        return self.polygon is not None and point_in_polygon(lng, lat, self.polygon)

    def as_dict(self, depth: int | None = None) -> dict[str, Any]:
        """JSON shape of the node and, up to ``depth`` levels, its children."""
        out: dict[str, Any] = {
            "code": self.code,
            "name": self.name,
            "level": self.level,
            "parent": self.parent_code,
            "owner": self.owner.as_dict(),
            "polygon": [list(p) for p in self.polygon] if self.polygon else None,
        }
        if depth is None or depth > 0:
            nxt = None if depth is None else depth - 1
            out["children"] = [c.as_dict(nxt) for c in self.children]
        return out


def point_in_polygon(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Ray casting; a point on an edge counts as inside for left/bottom edges only."""
    inside = False
    n = len(polygon)
    j = n - 1
    for i in range(n):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y):
            x_cross = (xj - xi) * (y - yi) / (yj - yi) + xi
            if x < x_cross:
                inside = not inside
        j = i
    return inside


@dataclass(frozen=True)
class GridLevels:
    """The levels a deployment uses (a subsequence of CANONICAL_LEVELS) and their digits."""

    names: tuple[str, ...]
    digits: Mapping[str, int]
    cell_level: str

    @classmethod
    def from_config(cls, levels: Sequence[Mapping[str, Any]], cell_level: str) -> GridLevels:
        if not levels:
            raise GridError("levels: at least the district and a cell level are needed")
        names = tuple(str(lv["name"]) for lv in levels)
        digits = {str(lv["name"]): int(lv["digits"]) for lv in levels}
        it = iter(CANONICAL_LEVELS)
        for name in names:
            if name not in CANONICAL_LEVELS:
                raise GridError(f"levels: unknown level {name!r}; use {CANONICAL_LEVELS}")
            if not any(name == c for c in it):
                raise GridError(f"levels: {name!r} is out of order; order is {CANONICAL_LEVELS}")
        if names[0] != "district":
            raise GridError("levels: the first level must be 'district'")
        if cell_level not in names:
            raise GridError(f"cell_level {cell_level!r} is not one of the levels {names}")
        upto_cell = names[: names.index(cell_level) + 1]
        if sum(digits[n] for n in upto_cell) != CELL_CODE_LENGTH:
            raise GridError(
                f"levels: digits down to the cell level must add up to {CELL_CODE_LENGTH} "
                "(6 division + 3 street + 3 community + 3 cell)"
            )
        return cls(names, digits, cell_level)

    def depth(self, level: str) -> int:
        return self.names.index(level)

    def tiers(self) -> tuple[str, ...]:
        """Levels that own a case, bottom (the cell) to top (the district)."""
        return tuple(reversed(self.names[: self.depth(self.cell_level) + 1]))


class GridRegistry:
    """The loaded grid: lookup by code, resolution of a point, tiers above a cell."""

    def __init__(self, levels: GridLevels, root: GridNode, version: str = "") -> None:
        self.levels = levels
        self.root = root
        self.version = version
        self._by_code: dict[str, GridNode] = {}
        for node in self._walk(root):
            if node.code in self._by_code:
                raise GridError(f"duplicate grid code {node.code}")
            self._by_code[node.code] = node
        self._cells = [n for n in self._by_code.values() if n.level == levels.cell_level]
        self._index = _BucketIndex([c for c in self._cells if c.polygon])

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GridRegistry:
        levels = GridLevels.from_config(data["levels"], data["cell_level"])
        root = _build_node(data["district"], levels, 0, None)
        return cls(levels, root, str(data.get("version", "")))

    @staticmethod
    def _walk(node: GridNode) -> Iterator[GridNode]:
        stack = [node]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_code)

    def get(self, code: str) -> GridNode | None:
        return self._by_code.get(code)

    def nodes(self) -> Iterator[GridNode]:
        return self._walk(self.root)

    def path_codes(self, code: str) -> list[str]:
        """Codes from the root down to the node ``code`` (a building's: down to its cell;
        an unknown code: itself alone, inside nothing)."""
        node = self.get(code)
        if node is None:
            try:
                node = self.cell_for_code(code)[0]
            except GridError:
                return [code]
        return [n.code for n in node.path()]

    @property
    def cells(self) -> list[GridNode]:
        return list(self._cells)

    def cell_for_code(self, code: str) -> tuple[GridNode, GridNode | None]:
        """The cell a code names, and the building when the code is below the cell.

        Raises GridError when the code is unknown or names a node above the cells.
        """
        node = self._by_code.get(code)
        if node is None:
            raise GridError(f"unknown grid code {code}")
        depth, cell_depth = self.levels.depth(node.level), self.levels.depth(self.levels.cell_level)
        if depth < cell_depth:
            raise GridError(
                f"{code} is a {node.level}; give a {self.levels.cell_level} (cell) code "
                "or a building code"
            )
        building = node if depth > cell_depth else None
        while node.level != self.levels.cell_level:
            assert node.parent is not None
            node = node.parent
        return node, building

    def locate(self, lat: float, lng: float) -> GridNode | None:
        """The cell whose polygon contains the point, or None."""
        for cell in self._index.candidates(lng, lat):
            if cell.contains(lng, lat):
                return cell
        return None

    def tier_node(self, cell: GridNode, tier: str) -> GridNode:
        """The node answering at ``tier`` for this cell.

        A tier this grid does not use (a 4-level grid has no 'area') falls to the next
        level up that it does use.
        """
        if tier not in CANONICAL_LEVELS:
            raise GridError(f"unknown tier {tier!r}")
        wanted = CANONICAL_LEVELS.index(tier)
        for node in cell.ancestors():
            if CANONICAL_LEVELS.index(node.level) <= wanted:
                return node
        return self.root

    def tier_info(self, cell: GridNode, tier: str) -> dict[str, Any]:
        """The tier, and the node and owner answering at it for this cell, as a dict."""
        node = self.tier_node(cell, tier)
        return {"tier": tier, "code": node.code, "name": node.name, "owner": node.owner.as_dict()}

    def next_tier(self, tier: str) -> str | None:
        """The tier above ``tier`` in this grid, or None at the top."""
        tiers = self.levels.tiers()
        i = tiers.index(self.normalise_tier(tier))
        return tiers[i + 1] if i + 1 < len(tiers) else None

    def normalise_tier(self, tier: str) -> str:
        """Map a canonical tier to the level this grid really has for it."""
        if tier not in CANONICAL_LEVELS:
            raise GridError(f"unknown tier {tier!r}")
        if tier in self.levels.tiers():
            return tier
        wanted = CANONICAL_LEVELS.index(tier)
        for level in self.levels.tiers():
            if CANONICAL_LEVELS.index(level) < wanted:
                return level
        return "district"


def _build_node(
    data: Mapping[str, Any], levels: GridLevels, depth: int, parent: GridNode | None
) -> GridNode:
    if depth >= len(levels.names):
        raise GridError(f"{data.get('code')}: deeper than the configured levels {levels.names}")
    level = levels.names[depth]
    code = str(data["code"])
    expected = (len(parent.code) if parent else 0) + levels.digits[level]
    if not _DIGITS.match(code) or len(code) != expected:
        raise GridError(f"{code}: a {level} code has {expected} digits")
    if parent is not None and not code.startswith(parent.code):
        raise GridError(f"{code}: must start with its parent's code {parent.code}")
    owner_data = data.get("owner") or {}
    if not owner_data.get("name") and not owner_data.get("role"):
        raise GridError(f"{code}: every node needs an owner (a person or a role)")
    polygon = data.get("polygon")
    node = GridNode(
        code=code,
        name=str(data["name"]),
        level=level,
        owner=Owner(
            name=str(owner_data.get("name", "")),
            role=str(owner_data.get("role", "")),
            id=str(owner_data.get("id", "")),
            phone=str(owner_data.get("phone", "")),
        ),
        parent=parent,
        polygon=tuple((float(p[0]), float(p[1])) for p in polygon) if polygon else None,
    )
    if node.polygon is not None and len(node.polygon) < 3:
        raise GridError(f"{code}: a polygon needs at least 3 points")
    node.children = [_build_node(c, levels, depth + 1, node) for c in data.get("children", [])]
    return node


class _BucketIndex:
    """A uniform-grid index over cell bounding boxes, so a point lookup tests few polygons."""

    def __init__(self, cells: list[GridNode]) -> None:
        self._buckets: dict[tuple[int, int], list[GridNode]] = {}
        if not cells:
            self._step = 1.0
            return
        boxes = [(c, _bbox(c.polygon or ())) for c in cells]
        widths = sorted(max(b[2] - b[0], b[3] - b[1]) for _, b in boxes)
        self._step = max(widths[len(widths) // 2], 1e-6)
        for cell, (x0, y0, x1, y1) in boxes:
            for bx in range(self._key(x0), self._key(x1) + 1):
                for by in range(self._key(y0), self._key(y1) + 1):
                    self._buckets.setdefault((bx, by), []).append(cell)

    def _key(self, v: float) -> int:
        return int(v // self._step)

    def candidates(self, x: float, y: float) -> list[GridNode]:
        return self._buckets.get((self._key(x), self._key(y)), [])


def _bbox(polygon: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in polygon]
    ys = [p[1] for p in polygon]
    return min(xs), min(ys), max(xs), max(ys)
