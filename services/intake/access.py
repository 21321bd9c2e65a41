"""Loading cases for a unit of work, and small request helpers the API modules share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Request

from shared.extensions.http import read_json, request_body

from .cases import Case
from .store import cases


def load(session: Session, case_id: str, *, for_update: bool = False) -> Case | None:
    return load_many(session, {case_id}, for_update=for_update).get(case_id)


def load_many(session: Session, case_ids: set[str], *, for_update: bool = True) -> dict[str, Case]:
    """Cases with their assignments, locked for the transaction when ``for_update``."""
    if not case_ids:
        return {}
    q = select(Case).where(cases.c.case_id.in_(case_ids)).order_by(cases.c.case_id)
    if for_update:  # in case id order, so that concurrent batches cannot deadlock
        q = q.with_for_update(of=cases)
    return {c.case_id: c for c in session.scalars(q)}


def optional_json(request: Request) -> dict[str, Any]:
    return read_json(request) if request_body(request) else {}
