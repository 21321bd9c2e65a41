"""What the benchmarks share: a throwaway RabbitMQ vhost, and percentiles."""

from __future__ import annotations

import requests

RABBIT_API = "http://127.0.0.1:15672"


def vhost(name: str, create: bool, api: str = RABBIT_API) -> None:
    """Create ``name`` (with guest allowed everything), or delete it."""
    url, auth = f"{api}/api/vhosts/{name}", ("guest", "guest")
    if not create:
        requests.delete(url, auth=auth, timeout=10)
        return
    requests.put(url, auth=auth, timeout=10).raise_for_status()
    requests.put(f"{api}/api/permissions/{name}/guest", auth=auth, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
