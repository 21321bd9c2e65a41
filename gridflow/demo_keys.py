"""The demo's API keys and metrics token: made by ``gridflow up`` on its first start, kept
in ``var/secrets/`` (0600) and reused while they are valid, printed in its banner.

One key per role, scoped to the demo district's first street, community and cell and to
the fire brigade, so that a visitor can try what each role may (and may not) do."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import access
from shared.private_files import read_or_create, write_private

KEYS_FILE = Path("secrets") / "demo-keys.json"
METRICS_TOKEN_FILE = Path("secrets") / "metrics.token"


@dataclass(frozen=True)
class DemoKey:
    role: str
    client: str
    grid: str | None = None
    department: str | None = None
    token: str = ""

    @property
    def scope(self) -> str:
        return self.department or self.grid or "whole district"


def wanted(grid: Any, departments: list[str]) -> list[DemoKey]:
    """The keys the demo offers, for this grid (``GridRegistry``) and these departments."""
    community = next((n for n in grid.nodes() if n.level == "community"), grid.root)
    cell = grid.cells[0] if grid.cells else grid.root
    department = "fire" if "fire" in departments else departments[0]
    return [
        DemoKey(access.ADMIN, "demo admin"),
        DemoKey(access.OPERATOR, f"demo operator, {community.name}", grid=community.code),
        DemoKey(access.PATROL_APP, f"demo patrol app, {cell.name}", grid=cell.code),
        DemoKey(access.DEPARTMENT, f"demo {department} system", department=department),
    ]


def ensure(var_dir: Path, database_url: str | None, grid: Any,
           departments: list[str]) -> list[DemoKey]:
    """The demo keys, issued into intake's database when missing or no longer valid."""
    from services.intake import keys
    from shared.clock import utcnow

    path = var_dir / KEYS_FILE
    try:
        kept = {k["role"]: k["token"] for k in json.loads(path.read_text())["keys"]}
    except (OSError, ValueError, KeyError, TypeError):
        kept = {}
    out: list[DemoKey] = []
    with keys.database(database_url, var_dir) as s:
        for want in wanted(grid, departments):
            token = kept.get(want.role, "")
            if not _valid(s, token, want):
                _, token = keys.issue(s, client=want.client, role=want.role, grid=want.grid,
                                      department=want.department, rate_per_min=0,
                                      note="made by gridflow up for the demo",
                                      by="gridflow up", now=utcnow())
            out.append(DemoKey(want.role, want.client, want.grid, want.department, token))
    write_private(path, json.dumps({"keys": [k.__dict__ for k in out]}, indent=2,
                                   ensure_ascii=False) + "\n")
    return out


def _valid(session: Any, token: str, want: DemoKey) -> bool:
    from services.intake import keys

    try:
        key_id, secret = access.parse_key(token)
    except access.AccessDenied:
        return False
    stored = keys.lookup(session, key_id)
    return (stored is not None and not stored.revoked
            and access.secret_matches(secret, stored.secret_hash)
            and (stored.principal.role, stored.principal.grid, stored.principal.department)
            == (want.role, want.grid, want.department))


def metrics_token(var_dir: Path, configured: str | None) -> str:
    """``GRIDFLOW_METRICS_TOKEN`` if set, else the one kept in var/secrets/metrics.token."""
    return configured or read_or_create(var_dir / METRICS_TOKEN_FILE,
                                        lambda: secrets.token_urlsafe(32))


def banner_lines(demo_keys: list[DemoKey], var_dir: Path) -> list[str]:
    lines = ["", "Demo API keys (send as 'Authorization: Bearer <key>'; also in "
             f"{var_dir / KEYS_FILE}):"]
    for k in demo_keys:
        lines.append(f"  {k.role:<11} {k.scope:<16} {k.token}")
    return lines
