"""Reporters: the cell's grid worker (网格员), residents and 12345 hotline callers write reports
— a category weighted to the everyday ones, a point in a cell, a Chinese description, and
now and then a repeat of something reported a moment ago nearby (a duplicate). Pure."""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Mapping
from typing import Any

from shared.grid import point_in_polygon

from . import texts
from .model import Action, Tunables
from .world import Category, Cell, World


class Reporters:
    def __init__(self, world: World, rng: random.Random, tunables: Tunables,
                 run_id: str) -> None:
        self.world = world
        self.rng = rng
        self.tun = tunables
        self.run_id = run_id
        self._categories = sorted(world.categories.values(), key=lambda c: c.code)
        self._weights = [texts.WEIGHTS.get(c.code, 1.0) for c in self._categories]
        self._count = itertools.count(1)
        self._recent: deque[dict[str, Any]] = deque(maxlen=30)

    def remember(self, body: Mapping[str, Any]) -> None:
        """A report intake registered as a case of its own: one that may be repeated."""
        self._recent.append({k: body.get(k) for k in
                             ("category", "grid_code", "description", "lat", "lng")})

    def write(self) -> Action:
        rng = self.rng
        report_id = f"sim-{self.run_id}-{next(self._count):05d}"
        if self._recent and rng.random() < self.tun.duplicate:
            orig = rng.choice(list(self._recent))
            cell = next((c for c in self.world.cells if c.code == orig["grid_code"]),
                        self.world.cells[0])
            body: dict[str, Any] = {
                "report_id": report_id, "category": orig["category"],
                "grid_code": orig["grid_code"],
                "description": rng.choice(texts.DUPLICATE).format(
                    description=orig["description"])[:2000],
                "reporter": self._resident(rng.random() < 0.5),
            }
            if orig.get("lat") is not None:
                body["lat"] = round(orig["lat"] + rng.uniform(-1e-4, 1e-4), 6)
                body["lng"] = round(orig["lng"] + rng.uniform(-1e-4, 1e-4), 6)
            return Action("report", body=body)
        category = rng.choices(self._categories, weights=self._weights)[0]
        cell = rng.choice(self.world.cells)
        kind = rng.choices(("grid_worker", "resident", "hotline"), weights=(55, 30, 15))[0]
        reporter = self._grid_worker(cell) if kind == "grid_worker" else \
            self._resident(kind == "hotline")
        body = {
            "report_id": report_id, "category": category.code, "grid_code": cell.code,
            "description": self._describe(category, cell), "reporter": reporter,
        }
        point = self._point_in(cell)
        if point is not None:
            body["lat"], body["lng"] = point
        if kind == "grid_worker":
            body["media_urls"] = [f"https://photos.gridflow.example/sim/{report_id}.jpg"]
        if rng.random() < self.tun.urgent:
            body["severity"] = "urgent"
        return Action("report", body=body)

    def _describe(self, category: Category, cell: Cell) -> str:
        rng = self.rng
        spot = rng.choice(texts.SPOTS).format(cell=cell.name, n=rng.randint(1, 8))
        template = rng.choice(texts.TEMPLATES.get(category.code) or texts.GENERIC)
        return template.format(place=spot, name=category.name, cell=cell.name)

    def _point_in(self, cell: Cell) -> tuple[float, float] | None:
        box = cell.bbox()
        if box is None or cell.polygon is None:
            return None
        x0, y0, x1, y1 = box
        mx, my = (x1 - x0) * 0.05, (y1 - y0) * 0.05
        for _ in range(20):
            x = self.rng.uniform(x0 + mx, x1 - mx)
            y = self.rng.uniform(y0 + my, y1 - my)
            if point_in_polygon(x, y, cell.polygon):
                return round(y, 6), round(x, 6)
        return None

    def _grid_worker(self, cell: Cell) -> dict[str, Any]:
        owner = cell.owner
        out = {"kind": "grid_worker", "id": owner.get("id") or f"gw-{cell.code[-6:]}"}
        for key in ("name", "phone"):
            if owner.get(key):
                out[key] = owner[key]
        return out

    def _resident(self, hotline: bool) -> dict[str, Any]:
        rng = self.rng
        name = rng.choice(texts.SURNAMES) + rng.choice(texts.GIVEN)
        phone = "13" + "".join(str(rng.randint(0, 9)) for _ in range(9))
        if hotline:
            return {"kind": "hotline", "id": f"12345-{rng.randint(1, 99999):05d}",
                    "name": name, "phone": phone}
        return {"kind": "resident", "id": f"r-{rng.randint(1, 600):04d}", "name": name,
                "phone": phone}
