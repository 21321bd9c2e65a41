"""Is a new report the same problem as an open case? Pure domain code.

A report is a duplicate of an open case with the same minor category that lies within the
category's radius (metres) and was reported within its window (hours). A report's place is
its point when it gave one, else the middle of its building's or cell's polygon.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.grid import GridNode, GridRegistry

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class Candidate:
    case_id: str
    lat: float
    lng: float


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lng) points, in metres (haversine)."""
    lat1, lng1, lat2, lng2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def centroid(polygon: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The middle of a polygon of (lng, lat) pairs, as (lat, lng): the vertex average."""
    lng = sum(p[0] for p in polygon) / len(polygon)
    lat = sum(p[1] for p in polygon) / len(polygon)
    return lat, lng


def place_of(lat: float | None, lng: float | None, code: str,
             grid: GridRegistry) -> tuple[float, float] | None:
    """Where a report is: its point, else the centre of its building or cell, if drawn."""
    if lat is not None and lng is not None:
        return lat, lng
    node: GridNode | None = grid.get(code)
    while node is not None and node.polygon is None:
        node = node.parent if node.level != grid.levels.cell_level else None
    return centroid(node.polygon) if node is not None and node.polygon else None


def nearest(place: tuple[float, float], candidates: Iterable[Candidate],
            radius_m: float) -> tuple[Candidate, float] | None:
    """The closest candidate within ``radius_m``, with its distance, or None."""
    best: tuple[Candidate, float] | None = None
    for c in candidates:
        d = distance_m(place, (c.lat, c.lng))
        if d <= radius_m and (best is None or d < best[1]):
            best = (c, d)
    return best
