"""Reference data a deployment ships as files: the grid, the catalogue and the calendar.

``GRIDFLOW_DATA_DIR`` (default ``deploy/demo``) holds ``district.yaml``, ``catalogue.yaml``,
``calendar.yaml`` and ``policy.yaml``. Each service loads them once at start-up, and a
policy that names an unknown category fails the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from shared.calendar import WorkCalendar
from shared.catalogue import Catalogue
from shared.grid import GridRegistry
from shared.policy import PolicyBook, PolicyError


@dataclass(frozen=True)
class ReferenceData:
    grid: GridRegistry
    catalogue: Catalogue
    calendar: WorkCalendar
    policy: PolicyBook
    source: Path


# libyaml's parser when PyYAML has it: a 50,000-cell district.yaml (46 MB) takes ~35 s with
# it and several times that with the pure-Python SafeLoader (tests/bench/case_queries.py)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_LOADER)  # a safe loader, C or Python


@lru_cache(maxsize=8)
def load_reference(data_dir: str | Path) -> ReferenceData:
    root = Path(data_dir)
    try:
        ref = ReferenceData(
            grid=GridRegistry.from_dict(_read(root / "district.yaml")),
            catalogue=Catalogue.from_dict(_read(root / "catalogue.yaml")),
            calendar=WorkCalendar.from_dict(_read(root / "calendar.yaml")),
            policy=PolicyBook.from_dict(_read(root / "policy.yaml")),
            source=root,
        )
    except FileNotFoundError as exc:
        raise SystemExit(f"reference data missing: {exc.filename} (set GRIDFLOW_DATA_DIR)") from exc
    unknown = sorted(set(ref.policy.categories) - {"*"} - set(ref.catalogue.categories))
    if unknown:
        raise PolicyError(f"policy.yaml names categories the catalogue lacks: {unknown}")
    return ref
