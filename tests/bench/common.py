"""What the benchmarks share: a throwaway RabbitMQ vhost (the tests' own), and percentiles."""

from __future__ import annotations

from support import RABBIT_API, vhost  # noqa: F401 - the benchmarks' vhost helper


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
