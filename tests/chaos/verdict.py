"""What the chaos run found, as figures, problems and a table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Verdict:
    reports_posted: int = 0
    reports_accepted: int = 0
    reports_rejected: int = 0
    http_statuses: dict[int, int] = field(default_factory=dict)
    refused_connections: int = 0
    cases: int = 0
    duplicates: int = 0
    missing_cases: list[str] = field(default_factory=list)
    dispatches_expected: int = 0
    dispatches_received: int = 0
    lost: list[tuple[str, str, str]] = field(default_factory=list)
    doubled: list[tuple[str, str, str]] = field(default_factory=list)
    unexpected: list[tuple[str, str, str]] = field(default_factory=list)
    redelivered: int = 0
    other_public: dict[str, int] = field(default_factory=dict)
    poison_sent: int = 0
    poison_dead_lettered: int = 0
    poison_missing: list[str] = field(default_factory=list)
    poison_without_reason: list[str] = field(default_factory=list)
    other_dead_letters: list[str] = field(default_factory=list)
    unsent_outbox: dict[str, int] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    broker_restarts: int = 0
    broker_down_s: list[float] = field(default_factory=list)
    unplanned_exits: dict[str, int] = field(default_factory=dict)
    crash_looped: list[str] = field(default_factory=list)
    consumer_reconnects: int = 0
    seconds: float = 0.0
    posting_s: float = 0.0
    settled_in_s: float = 0.0

    @property
    def problems(self) -> list[str]:
        p = []
        if self.reports_rejected:
            p.append(f"{self.reports_rejected} valid reports were refused")
        if self.missing_cases:
            p.append(f"{len(self.missing_cases)} accepted reports have no case: "
                     f"{self.missing_cases[:5]}")
        if self.lost:
            p.append(f"{len(self.lost)} dispatches lost: {self.lost[:5]}")
        if self.doubled:
            p.append(f"{len(self.doubled)} assignments dispatched twice: {self.doubled[:5]}")
        if self.unexpected:
            p.append(f"{len(self.unexpected)} unexpected assignments: {self.unexpected[:5]}")
        if self.poison_missing:
            p.append(f"{len(self.poison_missing)} poison messages not dead-lettered: "
                     f"{self.poison_missing[:5]}")
        if self.poison_without_reason:
            p.append(f"dead letters without a reason: {self.poison_without_reason[:5]}")
        if self.other_dead_letters:
            p.append(f"{len(self.other_dead_letters)} real messages dead-lettered: "
                     f"{self.other_dead_letters[:5]}")
        if any(self.unsent_outbox.values()):
            p.append(f"outbox rows never sent: {self.unsent_outbox}")
        if any(self.unplanned_exits.values()):
            p.append(f"services exited on their own: {self.unplanned_exits}")
        if self.crash_looped:
            p.append(f"services in a crash loop: {self.crash_looped}")
        return p

    def table(self) -> str:
        rows = [
            ("reports posted / accepted (2xx)",
             f"{self.reports_posted:,} / {self.reports_accepted:,}"),
            ("HTTP answers", ", ".join(f"{k}: {v:,}" for k, v in sorted(self.http_statuses.items()))
             + f"; refused connections {self.refused_connections:,}"),
            ("cases (of them duplicates, linked)", f"{self.cases:,} ({self.duplicates:,})"),
            ("accepted reports without a case", f"{len(self.missing_cases):,}"),
            ("dispatches expected / received", f"{self.dispatches_expected:,} / "
                                                f"{self.dispatches_received:,}"),
            ("lost / doubled / unexpected", f"{len(self.lost)} / {len(self.doubled)} / "
                                            f"{len(self.unexpected)}"),
            ("raw redeliveries (dropped by message_id)", f"{self.redelivered:,}"),
            ("other public messages", ", ".join(f"{k}: {v:,}" for k, v in
                                                sorted(self.other_public.items())) or "none"),
            ("poison sent / dead-lettered with reason",
             f"{self.poison_sent} / {self.poison_dead_lettered - len(self.poison_without_reason)}"),
            ("real messages dead-lettered", f"{len(self.other_dead_letters)}"),
            ("outbox rows unsent at the end", f"{sum(self.unsent_outbox.values())}"),
            ("kill -9 survived", ", ".join(f"{k} ×{v}" for k, v in sorted(self.kills.items()))
             or "none"),
            ("RabbitMQ restarts survived", f"{self.broker_restarts}"
             + (f" (down {', '.join(f'{s:.1f}' for s in self.broker_down_s)} s)"
                if self.broker_down_s else "")),
            ("unplanned exits / crash loops",
             f"{sum(self.unplanned_exits.values())} / {len(self.crash_looped)}"),
            ("department consumer reconnects", f"{self.consumer_reconnects}"),
            ("posting rate reached", f"{self.reports_accepted / max(self.posting_s, 1e-9):.1f}"
                                     f" reports/s over {self.posting_s:.0f} s"),
            ("run / settle time", f"{self.seconds:.0f} s / {self.settled_in_s:.0f} s"),
            ("verdict", "PASS" if not self.problems else "FAIL"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"  {k:<{width}}  {v}" for k, v in rows]
        rule = "  " + "-" * (width + 30)
        return "\n".join([rule, *lines, rule, *(f"  ! {p}" for p in self.problems)])
