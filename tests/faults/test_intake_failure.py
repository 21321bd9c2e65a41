"""Intake when it cannot keep a report: the disk is full (SQLite on a tiny tmpfs).

Intake must answer 503 with a clear body, never a 2xx for a report it did not durably keep,
and accept again once there is room. Every report that got a 2xx is readable afterwards.
(The database-down case, PostgreSQL through a fault proxy, is in ``test_reconnect``.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import only_on
from proxy import FaultProxy

from services.intake.service import IntakeService
from support import bearer, issue_key, report

CATEGORY = "E0801"  # never a duplicate: every report is a new case
TMPFS_SIZE = "2m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, unmounted at teardown."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {detail}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with a ballast file; returns it."""
    ballast = disk / f"ballast-{uuid.uuid4().hex[:6]}"
    chunk = b"\0" * 4096
    with ballast.open("wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(chunk)
        with contextlib.suppress(OSError):  # the last partial page too
            while True:
                fh.write(b"\0")
    return ballast


def _unavailable(r: Any) -> bool:
    if r.status_code != 503 or not r.headers["content-type"].startswith("application/json"):
        return False
    return "storage is unavailable" in " ".join(r.json()["errors"]["_service"])


@only_on("sqlite")
def test_disk_full_answers_503_and_keeps_every_2xx(
    small_disk: Path, broker_proxy: FaultProxy, faulty: Any, api: Any
) -> None:
    containers = faulty(IntakeService, GRIDFLOW_VAR_DIR=str(small_disk))
    assert (small_disk / "intake.db").exists()
    api.headers.update(bearer(issue_key(None, small_disk)))  # intake's database is here

    accepted: dict[str, str] = {}
    refused: list[str] = []

    def post(rid: str) -> Any:
        r = api.post("/api/v1/reports", json=report(rid, CATEGORY, description="独居老人" * 40))
        if r.status_code in (200, 201):
            accepted[rid] = r.json()["case_id"]
        else:
            assert _unavailable(r), (rid, r.status_code, r.text)
            assert r.headers.get("Retry-After")
            refused.append(rid)
        return r

    for i in range(3):
        assert post(f"before-{i}").status_code == 201
    ballast = fill(small_disk)
    # the database may still have free pages inside its files: keep writing until it is out
    for i in range(300):
        post(f"full-{i}")
        if len(refused) >= 5:
            break
    assert len(refused) >= 5, "the disk never filled up"
    assert not containers["intake"]._died.ready()
    reading = api.get(f"/api/v1/cases/{accepted['before-0']}")
    assert reading.status_code == 200  # reads need no space

    ballast.unlink()  # room again
    for rid in refused:  # nothing of them was kept: each is a new report now
        assert post(rid).status_code == 201, rid
    assert post("after").status_code == 201

    for rid, case_id in accepted.items():
        r = api.get(f"/api/v1/cases/{case_id}")
        assert r.status_code == 200, (rid, r.text)
        assert r.json()["case_id"] == case_id
    # and on disk, read by a connection of its own
    with contextlib.closing(sqlite3.connect(small_disk / "intake.db")) as db:
        kept = dict(db.execute("SELECT report_id, case_id FROM reports").fetchall())
    assert kept == accepted
    assert os.path.ismount(small_disk)
