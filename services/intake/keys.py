"""API keys and the audit log in intake's database: issue, list, revoke, look up; append
and query. The rules are in ``shared.access``; the HTTP gate is ``gate``; the command line
``gridflow keys`` / ``gridflow audit`` use these functions on the database directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from shared import access
from shared.access import Principal

from .store import Base, api_keys, audit_log

MAX_AUDIT_PAGE = 500


@dataclass(frozen=True)
class StoredKey:
    principal: Principal
    secret_hash: str
    rate_per_min: int | None
    revoked: bool


@contextmanager
def database(database_url: str | None, var_dir: str | Path) -> Iterator[Session]:
    """A transaction on intake's database (its SQLite file or PostgreSQL schema) from
    outside the service: the command line, the demo set-up. Tables are made if missing."""
    from shared.db import create_tables, make_engine, service_database_url

    engine = make_engine(service_database_url("intake", database_url, var_dir),
                         schema="intake", pool_size=1)
    try:
        create_tables(engine, Base.metadata)
        with Session(engine) as s, s.begin():
            yield s
    finally:
        engine.dispose()


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def key_view(row: Any) -> dict[str, Any]:
    """A key as listed: everything but the secret's hash."""
    return {
        "key_id": row.key_id, "client": row.client, "role": row.role, "grid": row.grid,
        "department": row.department, "rate_per_min": row.rate_per_min, "note": row.note,
        "created_at": _iso(row.created_at), "created_by": row.created_by,
        "revoked_at": _iso(row.revoked_at), "revoked_by": row.revoked_by,
        "active": row.revoked_at is None,
    }


def unknown_scope(ref: Any, grid: str | None, department: str | None) -> dict[str, str]:
    """What a key's scope names that the reference data (``ReferenceData``) does not
    know, by field."""
    out = {}
    if grid and ref.grid.get(grid) is None:
        out["grid"] = f"unknown grid code {grid}"
    if department and department not in ref.catalogue.departments:
        out["department"] = f"unknown department {department}"
    return out


def issue(session: Session, *, client: str, role: str, grid: str | None = None,
          department: str | None = None, rate_per_min: int | None = None, note: str = "",
          by: str, now: datetime) -> tuple[dict[str, Any], str]:
    """A new key's listing and its token (shown this once; only its hash is kept)."""
    problem = access.check_scope_fields(role, grid, department)
    if problem:
        raise ValueError(problem)
    new = access.new_key()
    session.execute(insert(api_keys).values(
        key_id=new.key_id, secret_hash=new.secret_hash, client=client, role=role, grid=grid,
        department=department, rate_per_min=rate_per_min, note=note, created_at=now,
        created_by=by))
    row = session.execute(select(api_keys).where(api_keys.c.key_id == new.key_id)).one()
    return key_view(row), new.token


def list_keys(session: Session, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    q = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
    if not include_revoked:
        q = q.where(api_keys.c.revoked_at.is_(None))
    return [key_view(r) for r in session.execute(q)]


def revoke(session: Session, key_id: str, *, by: str, now: datetime) -> dict[str, Any] | None:
    """The key as revoked (a key revoked before stays as it was), or None if unknown."""
    session.execute(update(api_keys).where(api_keys.c.key_id == key_id,
                                           api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=now, revoked_by=by))
    row = session.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
    return None if row is None else key_view(row)


def lookup(session: Session, key_id: str) -> StoredKey | None:
    row = session.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
    if row is None:
        return None
    return StoredKey(Principal(row.key_id, row.client, row.role, row.grid, row.department),
                     row.secret_hash, row.rate_per_min, row.revoked_at is not None)


# -- the audit log ------------------------------------------------------------------------
def record(session: Session, *, at: datetime, actor: str, role: str, action: str,
           outcome: str, via: str, key_id: str | None = None, target: str = "",
           status: int | None = None, source: str = "", route: str = "",
           detail: dict[str, Any] | None = None) -> None:
    session.execute(insert(audit_log).values(
        at=at, key_id=key_id, actor=actor[:120], role=role, action=action[:64],
        target=target[:64], outcome=outcome, status=status, via=via, source=source[:200],
        route=route[:200], detail=detail or {}))


def query_audit(session: Session, *, key_id: str | None = None, actor: str | None = None,
                action: str | None = None, target: str | None = None,
                outcome: str | None = None, since: datetime | None = None,
                until: datetime | None = None, page: int = 1,
                per_page: int = 100) -> dict[str, Any]:
    """Entries newest first, filtered, with the total that match."""
    a = audit_log
    conds = [c for c in (
        a.c.key_id == key_id if key_id else None,
        a.c.actor == actor if actor else None,
        a.c.action == action if action else None,
        a.c.target == target if target else None,
        a.c.outcome == outcome if outcome else None,
        a.c.at >= since if since else None,
        a.c.at < until if until else None,
    ) if c is not None]
    per_page = min(per_page, MAX_AUDIT_PAGE)
    total = session.scalar(select(func.count()).select_from(a).where(*conds))
    rows = session.execute(select(a).where(*conds).order_by(a.c.pk.desc())
                           .limit(per_page).offset((page - 1) * per_page))
    return {"total": total, "page": page, "per_page": per_page, "entries": [
        {"id": r.pk, "at": _iso(r.at), "key_id": r.key_id, "actor": r.actor, "role": r.role,
         "action": r.action, "target": r.target, "outcome": r.outcome, "status": r.status,
         "via": r.via, "source": r.source, "route": r.route, "detail": r.detail}
        for r in rows]}
