"""The category catalogue: departments, component (部件) and event (事件) categories.

Pure domain code, loaded from data (``deploy/demo/catalogue.yaml``). Each minor category
names its lead department, its assisting departments, the tier it starts at, and its
report-in and resolve deadlines as durations (see ``shared.calendar.Duration``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.calendar import Duration
from shared.failures import PoisonEvent
from shared.grid import CANONICAL_LEVELS

_DEPT_CODE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
FAMILIES = {"component": "部件", "event": "事件"}
STARTING_TIERS = tuple(t for t in CANONICAL_LEVELS if t != "building")
DEFAULT_DUPLICATE_RADIUS_M = 100.0
DEFAULT_DUPLICATE_WINDOW_H = 24.0


class CatalogueError(ValueError):
    """The catalogue data is inconsistent."""


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    name_en: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "name": self.name, "name_en": self.name_en}


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    family: str
    major_code: str
    major_name: str
    lead: str
    assist: tuple[str, ...]
    tier: str
    report_in: Duration
    resolve: Duration
    name_en: str = ""
    alternates: tuple[str, ...] = ()  # who takes a returned assignment (退单), in order
    reopen_on_complaint: bool = True  # an unsatisfied rating reopens the case
    duplicate_radius_m: float = DEFAULT_DUPLICATE_RADIUS_M
    duplicate_window_h: float = DEFAULT_DUPLICATE_WINDOW_H

    @property
    def departments(self) -> tuple[str, ...]:
        return (self.lead, *self.assist)

    @property
    def candidates(self) -> tuple[str, ...]:
        """Every department that may hold an assignment of this category, in order."""
        return (*self.departments, *self.alternates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "name_en": self.name_en,
            "family": self.family,
            "family_name": FAMILIES[self.family],
            "major": {"code": self.major_code, "name": self.major_name},
            "lead": self.lead,
            "assist": list(self.assist),
            "tier": self.tier,
            "alternates": list(self.alternates),
            "reopen_on_complaint": self.reopen_on_complaint,
            "duplicates": {"radius_m": self.duplicate_radius_m,
                           "window_h": self.duplicate_window_h},
            "deadlines": {
                "report_in": self.report_in.as_dict(),
                "resolve": self.resolve.as_dict(),
            },
        }


class Catalogue:
    def __init__(
        self,
        version: str,
        departments: Mapping[str, Department],
        categories: Mapping[str, Category],
    ) -> None:
        self.version = version
        self.departments = dict(departments)
        self.categories = dict(categories)

    def __contains__(self, code: str) -> bool:
        return code in self.categories

    def get(self, code: str) -> Category | None:
        return self.categories.get(code)

    def check_assignments(self, assignments: Iterable[Mapping[str, Any]]) -> None:
        """Refuse (PoisonEvent) assignments naming a department this catalogue lacks: no
        clock or dispatch may be kept for a department nobody can answer as."""
        unknown = sorted({str(a["department"]) for a in assignments} - set(self.departments))
        if unknown:
            raise PoisonEvent(f"422: departments not in the catalogue: {', '.join(unknown)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalogue:
        departments: dict[str, Department] = {}
        for d in data["departments"]:
            if not _DEPT_CODE.match(str(d["code"])) or d["code"] == "tier":
                raise CatalogueError(
                    f"department code {d['code']!r}: lower-case letters, digits and _ "
                    "(it is a routing-key word), and not 'tier'"
                )
            dept = Department(
                code=str(d["code"]), name=str(d["name"]), name_en=str(d.get("name_en", ""))
            )
            if dept.code in departments:
                raise CatalogueError(f"duplicate department {dept.code}")
            departments[dept.code] = dept

        categories: dict[str, Category] = {}
        for fam in data["families"]:
            family = str(fam["family"])
            if family not in FAMILIES:
                raise CatalogueError(f"unknown family {family!r}; use one of {sorted(FAMILIES)}")
            for major in fam["majors"]:
                for m in major["minors"]:
                    cat = _category(m, family, major, departments)
                    if cat.code in categories:
                        raise CatalogueError(f"duplicate category {cat.code}")
                    categories[cat.code] = cat
        return cls(str(data.get("version", "")), departments, categories)


def _flag(m: Mapping[str, Any], key: str, default: bool) -> bool:
    value = m.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


def _category(
    m: Mapping[str, Any],
    family: str,
    major: Mapping[str, Any],
    departments: Mapping[str, Department],
) -> Category:
    code = str(m["code"])
    for key in ("assist", "alternates"):
        if not isinstance(m.get(key, []), list):
            raise CatalogueError(f"category {code}: {key} must be a list of department codes")
    try:
        cat = Category(
            code=code,
            name=str(m["name"]),
            name_en=str(m.get("name_en", "")),
            family=family,
            major_code=str(major["code"]),
            major_name=str(major["name"]),
            lead=str(m["lead"]),
            assist=tuple(str(a) for a in m.get("assist", ())),
            tier=str(m["tier"]),
            report_in=Duration.parse(str(m["report_in"])),
            resolve=Duration.parse(str(m["resolve"])),
            alternates=tuple(str(a) for a in m.get("alternates", ())),
            reopen_on_complaint=_flag(m, "reopen_on_complaint", True),
            duplicate_radius_m=float(m.get("duplicate_radius_m", DEFAULT_DUPLICATE_RADIUS_M)),
            duplicate_window_h=float(m.get("duplicate_window_h", DEFAULT_DUPLICATE_WINDOW_H)),
        )
    except (KeyError, ValueError) as exc:
        raise CatalogueError(f"category {code}: {exc}") from exc
    if cat.duplicate_radius_m < 0 or cat.duplicate_window_h < 0:
        raise CatalogueError(f"category {code}: duplicate radius and window must be >= 0")
    if set(cat.alternates) & set(cat.departments) or len(set(cat.alternates)) < len(
        cat.alternates
    ):
        raise CatalogueError(f"category {code}: alternates repeat a department")
    for dept in cat.candidates:
        if dept not in departments:
            raise CatalogueError(f"category {code}: unknown department {dept!r}")
    if cat.lead in cat.assist:
        raise CatalogueError(f"category {code}: the lead {cat.lead} cannot also assist")
    if cat.tier not in STARTING_TIERS:
        raise CatalogueError(f"category {code}: tier must be one of {STARTING_TIERS}")
    return cat
