"""The simulator's vocabulary: its settings, an action and its outcome, the counters, and
the schedule of actions in real time. Pure data."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

MINUTE = 60.0


@dataclass(frozen=True)
class Tunables:
    """How the district behaves. Shares are fractions (0–1); delays are (low, high) in demo
    minutes, drawn uniformly."""

    rate: float = 10.0  # reports per REAL minute, whatever the speed
    late: float = 0.15  # assignments whose department does not report in before the deadline
    duplicate: float = 0.08  # reports repeating a recent one (same category, a few metres off)
    returns: float = 0.04  # first assignments a department returns (退单)
    progress: float = 0.5  # assignments that report progress (进展) before resolving
    verify_fail: float = 0.1  # verifications (核查) that fail: the lead works again (返工)
    rates: float = 0.75  # reporters who rate a closed case (评议)
    unhappy: float = 0.15  # ratings that are unsatisfied: the case reopens
    whistle: float = 0.3  # escalations to a community or street owner that it whistles on
    hard: float = 0.25  # whistles that are hard cases (the district's leadership)
    amqp: float = 0.3  # departments answering over AMQP (gridflow.responses), not HTTP
    urgent: float = 0.03  # reports marked urgent
    report_in: tuple[float, float] = (5, 40)
    late_by: tuple[float, float] = (5, 45)  # after the report-in deadline, for the late ones
    resolve: tuple[float, float] = (60, 360)  # after reporting in
    return_after: tuple[float, float] = (5, 30)
    verify: tuple[float, float] = (10, 90)
    rate_after: tuple[float, float] = (20, 240)
    follow_up: tuple[float, float] = (10, 120)
    whistle_after: tuple[float, float] = (5, 30)
    dispatch_after: tuple[float, float] = (10, 40)

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError("rate must not be negative")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                if not 0 <= value[0] <= value[1]:
                    raise ValueError(f"{f.name}: need 0 <= low <= high, got {value}")
            elif f.name != "rate" and not 0 <= value <= 1:
                raise ValueError(f"{f.name} is a fraction between 0 and 1, got {value}")


@dataclass(frozen=True)
class Action:
    """One thing someone does: an HTTP call on intake or an answer on gridflow.responses."""

    kind: str  # report ack progress resolve return verify rate follow_up whistle dispatch
    case_id: str = ""
    department: str = ""
    body: Mapping[str, Any] = field(default_factory=dict)
    via: str = "http"  # "amqp": a department's answer published on gridflow.responses
    task_id: int = 0
    chain: int = 0  # the (case, department) work it belongs to; stale chains are dropped
    late: bool = False  # a report-in after the deadline, on purpose

    @property
    def path(self) -> str:
        """The intake API path this action posts to."""
        case = f"/api/v1/cases/{self.case_id}"
        return {
            "report": "/api/v1/reports",
            "ack": f"{case}/assignments/{self.department}/ack",
            "progress": f"{case}/assignments/{self.department}/progress",
            "resolve": f"{case}/assignments/{self.department}/resolve",
            "return": f"{case}/assignments/{self.department}/return",
            "verify": f"{case}/verification",
            "rate": f"{case}/rating",
            "whistle": f"{case}/whistle",
            "dispatch": f"{case}/assignments",
            "follow_up": f"/api/v1/tasks/{self.task_id}/done",
        }[self.kind]

    @property
    def routing_key(self) -> str:
        """For a department's answer over AMQP: ``<department>.<action>``."""
        return f"{self.department}.{self.kind}"



@dataclass(frozen=True)
class Outcome:
    """What came of an action: the HTTP status (0: no answer; 202 for an AMQP answer the
    broker confirmed) and the JSON body."""

    status: int
    body: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Stats:
    reports: int = 0
    duplicates: int = 0
    assigned: int = 0
    acked: int = 0
    late: int = 0
    progress: int = 0
    resolved: int = 0
    returned: int = 0
    verified: int = 0
    failed: int = 0
    closed: int = 0
    rated: int = 0
    unhappy: int = 0
    followups: int = 0
    whistles: int = 0
    by_hand: int = 0
    escalated: int = 0  # cases seen escalated (case.escalated)
    reminded: int = 0  # cases seen reminded (case.reminded)
    messages: int = 0
    errors: int = 0
    conflicts: int = 0  # 409: the case had moved on
    rejected: int = 0  # other 4xx
    server_errors: int = 0  # 5xx after retries
    unreachable: int = 0  # no answer after retries
    superseded: int = 0  # planned work dropped: the assignment was reassigned or reworked

    def line(self) -> str:
        """``key=value`` pairs, for a progress line."""
        keys = ("reports", "duplicates", "assigned", "acked", "late", "progress", "resolved",
                "returned", "verified", "failed", "closed", "rated", "unhappy", "followups",
                "whistles", "by_hand", "escalated", "reminded", "errors")
        out = " ".join(f"{k}={getattr(self, k)}" for k in keys)
        if self.errors:
            out += (f" (409={self.conflicts} 4xx={self.rejected} 5xx={self.server_errors} "
                    f"unreachable={self.unreachable})")
        return out


class Schedule:
    """Actions in order of their real time."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = itertools.count()

    def add(self, at: float, action: Action) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), action))

    def pop_due(self, now: float) -> list[tuple[float, Action]]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            at, _, action = heapq.heappop(self._heap)
            out.append((at, action))
        return out

    def next_at(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def items(self) -> list[tuple[float, Action]]:
        return [(at, a) for at, _, a in sorted(self._heap)]

    def __len__(self) -> int:
        return len(self._heap)
