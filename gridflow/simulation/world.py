"""The district the simulator plays: departments, categories and cells, read from intake's
API (``GET /api/v1/categories``, ``GET /api/v1/grids``) so that it plays whatever district
the running gridflow serves."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cell:
    code: str
    name: str
    owner: Mapping[str, str]  # the grid worker: id, name, role, phone
    polygon: tuple[tuple[float, float], ...] | None  # (lng, lat) pairs

    def bbox(self) -> tuple[float, float, float, float] | None:
        """(min lng, min lat, max lng, max lat) of the polygon."""
        if not self.polygon:
            return None
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    lead: str
    assist: tuple[str, ...] = ()
    alternates: tuple[str, ...] = ()
    tier: str = "compound"

    @property
    def departments(self) -> tuple[str, ...]:
        return (self.lead, *self.assist)


@dataclass(frozen=True)
class World:
    departments: tuple[str, ...]
    categories: Mapping[str, Category]
    cells: tuple[Cell, ...]

    @classmethod
    def from_api(cls, categories: Mapping[str, Any], grids: Mapping[str, Any]) -> World:
        """From the JSON of ``/api/v1/categories`` and ``/api/v1/grids`` (the whole tree)."""
        cats = {
            c["code"]: Category(
                code=c["code"], name=c.get("name") or c["code"], lead=c["lead"],
                assist=tuple(c.get("assist") or ()), alternates=tuple(c.get("alternates") or ()),
                tier=c.get("tier") or "compound",
            )
            for c in categories.get("categories", [])
        }
        cell_level = grids.get("cell_level", "compound")
        cells = tuple(
            Cell(code=n["code"], name=n.get("name") or n["code"], owner=n.get("owner") or {},
                 polygon=tuple((float(p[0]), float(p[1])) for p in n["polygon"])
                 if n.get("polygon") else None)
            for n in _walk(grids.get("tree") or {}) if n.get("level") == cell_level
        )
        departments = tuple(sorted(d["code"] for d in categories.get("departments", [])))
        if not cats or not cells or not departments:
            raise ValueError("the district has no categories, cells or departments")
        return cls(departments=departments, categories=cats, cells=cells)


def _walk(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    if not node:
        return
    yield node
    for child in node.get("children") or ():
        yield from _walk(child)
