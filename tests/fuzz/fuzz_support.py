"""What the fuzz tests share: reading a service's whole database state, to prove a refused
input left nothing behind, and waiting for the services to be quiet."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from shared.extensions.store import Store
from support import case_view, report, wait_for

# Tables only ever appended to: their row count and highest key say whether a row came.
APPEND_ONLY = ("timeline", "outbox", "inbox", "reports")


class DbState:
    """A service's database as a comparable value: every row of the tables that change in
    place, the size and the last key of the append-only ones."""

    def __init__(self, container: Any, *, ignore: tuple[str, ...] = ()) -> None:
        """``ignore``: tables left out (ones that change on their own, e.g. heartbeats)."""
        store = next(d for d in container.dependencies if isinstance(d, Store))
        self.engine = store.engine
        self.tables = [t for t in store.metadata.sorted_tables if t.name not in ignore]
        self.name = container.service_name

    def __call__(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        with self.engine.connect() as conn:
            for table in self.tables:
                pk = list(table.primary_key.columns)
                if table.name in APPEND_ONLY:
                    state[table.name] = tuple(conn.execute(
                        select(func.count(), *(func.max(c) for c in pk)).select_from(table)
                    ).one())
                else:
                    state[table.name] = [tuple(r) for r in conn.execute(
                        select(table).order_by(*pk))]
        return state


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: (before.get(k), after.get(k)) for k in after if before.get(k) != after.get(k)}


def settled(states: list[DbState], *, quiet_s: float = 0.5, timeout: float = 30.0) -> None:
    """Wait until none of these databases changed for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last = [s() for s in states]
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = [s() for s in states]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
    raise AssertionError("the services did not settle")


# -- driving cases over intake's API ----------------------------------------------------------
def post(api: Any, path: str, body: dict[str, Any], status: int = 200) -> Any:
    r = api.post(path, json=body)
    assert r.status_code == status, (path, r.status_code, r.text)
    return r.json()


def until(api: Any, case_id: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        case = case_view(api, case_id)
        return case if ok(case) else None

    return wait_for(check, what=f"case {case_id}")


def new_case(api: Any, report_id: str, category: str) -> dict[str, Any]:
    """A reported case, once the pipeline dispatched it."""
    case_id = post(api, "/api/v1/reports", report(report_id, category), 201)["case_id"]
    return until(api, case_id, lambda c: c["state"] == "dispatched")


def resolve_all(api: Any, case: dict[str, Any]) -> None:
    for a in case["assignments"]:
        base = f"/api/v1/cases/{case['case_id']}/assignments/{a['department']}"
        post(api, f"{base}/ack", {})
        post(api, f"{base}/resolve", {"note": "处理完毕"})
