"""The reporters' side of the chaos run: patrol apps posting at a steady rate."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from shared.reference import ReferenceData


@dataclass
class Posting:
    accepted: dict[str, str] = field(default_factory=dict)  # report_id -> case_id
    statuses: Counter[int] = field(default_factory=Counter)
    refused_connections: int = 0
    retries: int = 0
    rejected: dict[str, str] = field(default_factory=dict)  # report_id -> 4xx body


def report_bodies(ref: ReferenceData, n: int, run: str, seed: int) -> list[dict[str, Any]]:
    """``n`` plausible reports: random categories, cells and points inside the cells."""
    rng = random.Random(seed)
    categories = sorted(ref.catalogue.categories)
    cells = [c for c in ref.grid.cells if c.polygon]
    bodies = []
    for i in range(n):
        cell = rng.choice(cells)
        xs = [p[0] for p in cell.polygon]
        ys = [p[1] for p in cell.polygon]
        worker = rng.random() < 0.7
        bodies.append({
            "report_id": f"chaos-{run}-{i:06d}",
            "category": rng.choice(categories),
            "grid_code": cell.code,
            "lat": round(rng.uniform(min(ys), max(ys)), 6),
            "lng": round(rng.uniform(min(xs), max(xs)), 6),
            "description": f"巡查发现问题 #{i}",
            "reporter": {
                "kind": "grid_worker" if worker else "resident",
                "id": f"{'gw' if worker else 'r'}-{rng.randrange(1, 400):04d}",
                "name": "网格员" if worker else "居民",
                "phone": f"138{rng.randrange(10**8):08d}",
            },
        })
    return bodies


class Reporters:
    """Posts the bodies at ``rate`` per second with several clients, each with ``api_key``;
    a refused connection or a 5xx is retried with the same report_id (intake is idempotent
    on it) until it is accepted, as a patrol app does."""

    def __init__(self, base_url: str, bodies: list[dict[str, Any]], rate: float,
                 clients: int, api_key: str) -> None:
        self.base_url, self.bodies, self.rate = base_url, bodies, rate
        self.api_key = api_key
        self.result = Posting()
        self._lock = threading.Lock()
        self._next = 0
        self._t0 = 0.0
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        self._t0 = time.monotonic()
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join()

    @property
    def posted(self) -> int:
        return len(self.result.accepted) + len(self.result.rejected)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self.bodies):
                return None
            i, self._next = self._next, self._next + 1
        delay = self._t0 + i / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return i

    def _work(self) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.api_key}"
        while (i := self._take()) is not None:
            body = self.bodies[i]
            while True:
                try:
                    r = session.post(f"{self.base_url}/api/v1/reports", json=body, timeout=15)
                except requests.RequestException:
                    with self._lock:
                        self.result.refused_connections += 1
                    time.sleep(0.3)
                    continue
                with self._lock:
                    self.result.statuses[r.status_code] += 1
                if r.status_code in (200, 201):
                    with self._lock:
                        self.result.accepted[body["report_id"]] = r.json()["case_id"]
                    break
                if r.status_code >= 500:
                    with self._lock:
                        self.result.retries += 1
                    time.sleep(0.3)
                    continue
                with self._lock:
                    self.result.rejected[body["report_id"]] = r.text[:300]
                break
