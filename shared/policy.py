"""Tier policies: how a case climbs the grid when its deadlines are missed.

Pure domain code, loaded from data (``deploy/demo/policy.yaml``). A policy is a list of
steps, one per tier on the escalation path compound → area → community → street →
district. Each step says who is told when the case reaches it (the departments, the
tier's owner, the supervisors one tier above), the report-in and resolve deadlines that
apply from then on, and how often a missed deadline is repeated at that tier (a reminder
with a fresh deadline) before the case moves up. At the last step, once the repeats are
used up, the clock stops: the case stays on the supervision ledger until it is resolved.

A category (and, optionally, a report's severity) picks a policy and may move the starting
tier. The starting step uses the category's own deadlines from the catalogue.

When a case is routed, its policy is *snapshotted* into plain JSON that travels with the
case: editing the policy file never changes cases already in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.calendar import Duration
from shared.catalogue import Category
from shared.grid import CANONICAL_LEVELS, GridRegistry

TARGETS = ("departments", "tier_owner", "supervisors")
SEVERITIES = ("normal", "urgent")
WHISTLE_LEVELS = ("routine", "hard")
PATH_TIERS = ("compound", "area", "community", "street", "district")


class PolicyError(ValueError):
    """The policy data is inconsistent."""


@dataclass(frozen=True)
class Step:
    tier: str
    notify: tuple[str, ...]
    report_in: Duration
    resolve: Duration
    repeat: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "notify": list(self.notify),
            "report_in": str(self.report_in),
            "resolve": str(self.resolve),
            "repeat": self.repeat,
        }


@dataclass(frozen=True)
class Policy:
    name: str
    steps: tuple[Step, ...]  # bottom (compound) to top (district)


@dataclass(frozen=True)
class WhistleTerms:
    """What a whistle gives the departments it summons, and where it puts the case."""

    level: str
    report_in: Duration
    resolve: Duration
    raise_to: str | None  # a hard case goes to the district's leadership

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "report_in": str(self.report_in),
            "resolve": str(self.resolve),
            "raise_to": self.raise_to,
        }


@dataclass(frozen=True)
class Choice:
    policy: str
    start: str | None  # None: the catalogue's starting tier
    by_severity: bool = False  # chosen for the report's severity: the policy's own deadlines


class PolicyBook:
    def __init__(
        self,
        version: str,
        policies: Mapping[str, Policy],
        default: str,
        categories: Mapping[str, Mapping[str, Choice]],
        whistle: Mapping[str, WhistleTerms],
    ) -> None:
        self.version = version
        self.policies = dict(policies)
        self.default = default
        self.categories = {k: dict(v) for k, v in categories.items()}
        self.whistle = dict(whistle)

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyBook:
        if not isinstance(data, Mapping) or not isinstance(data.get("policies"), Mapping):
            raise PolicyError("policies: give at least one named policy")
        policies = {name: _policy(name, p) for name, p in data["policies"].items()}
        default = str(data.get("default", "default"))
        if default not in policies:
            raise PolicyError(f"default policy {default!r} is not defined")

        def choice(where: str, spec: Mapping[str, Any], by_severity: bool = False) -> Choice:
            name = str(spec.get("policy", default))
            if name not in policies:
                raise PolicyError(f"{where}: unknown policy {name!r}")
            start = spec.get("start")
            if start is not None and start not in PATH_TIERS:
                raise PolicyError(f"{where}: start must be one of {PATH_TIERS}")
            return Choice(name, start, by_severity)

        categories: dict[str, dict[str, Choice]] = {}
        for code, spec in (data.get("categories") or {}).items():
            rules = {"normal": choice(f"categories.{code}", spec)}
            for sev, sev_spec in (spec.get("severity") or {}).items():
                if sev not in SEVERITIES:
                    raise PolicyError(f"categories.{code}: unknown severity {sev!r}")
                rules[sev] = choice(f"categories.{code}.severity.{sev}", {**spec, **sev_spec},
                                    by_severity=True)
            categories[str(code)] = rules
        for sev, sev_spec in (data.get("severity") or {}).items():  # for every category
            if sev not in SEVERITIES:
                raise PolicyError(f"severity: unknown severity {sev!r}")
            categories.setdefault("*", {})[sev] = choice(f"severity.{sev}", sev_spec,
                                                          by_severity=True)

        whistle = {}
        for level, spec in (data.get("whistle") or {}).items():
            if level not in WHISTLE_LEVELS:
                raise PolicyError(f"whistle: unknown level {level!r}; use {WHISTLE_LEVELS}")
            raise_to = spec.get("raise_to")
            if raise_to is not None and raise_to not in PATH_TIERS:
                raise PolicyError(f"whistle.{level}: raise_to must be one of {PATH_TIERS}")
            whistle[level] = WhistleTerms(
                level, _duration(spec, "report_in", f"whistle.{level}"),
                _duration(spec, "resolve", f"whistle.{level}"), raise_to,
            )
        missing = set(WHISTLE_LEVELS) - set(whistle)
        if missing:
            raise PolicyError(f"whistle: terms missing for {sorted(missing)}")
        return cls(str(data.get("version", "")), policies, default, categories, whistle)

    # -- choosing --------------------------------------------------------------------------
    def choose(self, category: str, severity: str = "normal") -> Choice:
        rules = self.categories.get(category, {})
        if severity in rules:
            return rules[severity]
        own = rules.get("normal", Choice(self.default, None))
        general = self.categories.get("*", {}).get(severity)
        if general is None:
            return own
        # a severity rule for every category keeps the category's own starting tier
        return Choice(general.policy, general.start or own.start, general.by_severity)

    def snapshot(self, category: Category, severity: str, grid: GridRegistry) -> dict[str, Any]:
        """The policy for one case, as plain JSON, from its starting tier to the top.

        Tiers the grid does not use (a 4-level grid has no areas) are left out. The first
        step carries the category's own deadlines, unless the policy was chosen for the
        report's severity (an urgent report keeps the urgent policy's shorter deadlines).
        """
        chosen = self.choose(category.code, severity)
        policy = self.policies[chosen.policy]
        start = grid.normalise_tier(chosen.start or category.tier)
        tiers = grid.levels.tiers()
        steps = [s for s in policy.steps if s.tier in tiers]
        if not steps or start not in [s.tier for s in steps]:
            raise PolicyError(
                f"policy {policy.name!r} has no step for the starting tier {start!r}"
            )
        steps = steps[[s.tier for s in steps].index(start):]
        if not chosen.by_severity:
            first = steps[0]
            steps[0] = Step(first.tier, first.notify, category.report_in, category.resolve,
                            first.repeat)
        return {
            "name": policy.name,
            "version": self.version,
            "severity": severity,
            "start": start,
            "steps": [s.as_dict() for s in steps],
            "whistle": {level: t.as_dict() for level, t in self.whistle.items()},
        }


def _duration(spec: Mapping[str, Any], key: str, where: str) -> Duration:
    try:
        return Duration.parse(str(spec[key]))
    except KeyError as exc:
        raise PolicyError(f"{where}: {key} is missing") from exc
    except ValueError as exc:
        raise PolicyError(f"{where}: {exc}") from exc


def _policy(name: str, spec: Mapping[str, Any]) -> Policy:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("steps"), list):
        raise PolicyError(f"policies.{name}: give a list of steps")
    steps = []
    for i, s in enumerate(spec["steps"]):
        where = f"policies.{name}.steps[{i}]"
        if not isinstance(s, Mapping):
            raise PolicyError(f"{where}: a step is a mapping (tier, notify, report_in, …)")
        tier = str(s.get("tier"))
        if tier not in PATH_TIERS:
            raise PolicyError(f"{where}: tier must be one of {PATH_TIERS}")
        notify = tuple(str(t) for t in s.get("notify", ["departments", "tier_owner"]))
        unknown = set(notify) - set(TARGETS)
        if unknown:
            raise PolicyError(f"{where}: unknown notify target(s) {sorted(unknown)}; "
                              f"use {TARGETS}")
        repeat = s.get("repeat", 0)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 0 <= repeat <= 10:
            raise PolicyError(f"{where}: repeat must be a whole number between 0 and 10")
        steps.append(Step(tier, notify, _duration(s, "report_in", where),
                          _duration(s, "resolve", where), repeat))
    order = [CANONICAL_LEVELS.index(s.tier) for s in steps]
    if order != sorted(order, reverse=True) or len(set(order)) != len(order):
        raise PolicyError(f"policies.{name}: steps must go up the grid, one per tier")
    return Policy(name, tuple(steps))


# -- reading a snapshot -----------------------------------------------------------------------
def step_duration(snapshot: Mapping[str, Any], step: int, kind: str) -> Duration:
    return Duration.parse(snapshot["steps"][step][kind])


def whistle_terms(snapshot: Mapping[str, Any], level: str) -> Mapping[str, Any]:
    return snapshot["whistle"][level]


def step_of_tier(snapshot: Mapping[str, Any], tier: str) -> int:
    """The index of ``tier`` on the case's path (the top step if the tier is above it)."""
    tiers = [s["tier"] for s in snapshot["steps"]]
    if tier in tiers:
        return tiers.index(tier)
    wanted = CANONICAL_LEVELS.index(tier)
    for i, t in enumerate(tiers):
        if CANONICAL_LEVELS.index(t) <= wanted:
            return i
    return len(tiers) - 1
