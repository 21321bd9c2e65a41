"""Where a service process spends its time: py-spy samples sorted into a few kinds of work.

``Sampler`` runs ``py-spy record`` on processes while a benchmark phase runs; ``kinds``
sorts each sample by the first of these its stack holds: the database commit itself (on
SQLite the fsync, during which the whole process waits), marshmallow (validating messages
and bodies), SQLAlchemy (ORM and SQL), JSON, HTTP serving, AMQP (kombu, py-amqp), waiting
for work (eventlet's hub), else Python of gridflow and nameko.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

# (kind, what a frame of that kind contains), most specific first
KINDS: tuple[tuple[str, str], ...] = (
    ("db commit", "do_commit (sqlalchemy/engine/default.py"),
    ("marshmallow", "marshmallow/"),
    ("SQLAlchemy", "sqlalchemy/"),
    ("JSON", "/json/"),
    ("HTTP", "eventlet/wsgi.py"),
    ("AMQP", "amqp/"),
    ("idle", "Hub.do_poll"),
)
OTHER = "other Python"


def kind_of(stack: str) -> str:
    for kind, needle in KINDS:
        if needle in stack:
            return kind
    return OTHER


def kinds(raw: Path) -> Counter[str]:
    """Samples per kind from a py-spy ``--format raw`` file."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit():
            counts[kind_of(stack)] += int(n)
    return counts


class Sampler:
    """``py-spy record`` on each named process from ``start`` to ``result``; ``available``
    is False when py-spy is not installed (``pip install py-spy``)."""

    def __init__(self, pids: dict[str, int], rate: int = 100) -> None:
        self.pids, self.rate = pids, rate
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.available = Path(self.exe).exists()
        self.dir = Path(tempfile.mkdtemp(prefix="gridflow-profile-"))
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        if not self.available:
            return
        for name, pid in self.pids.items():
            self.procs[name] = subprocess.Popen(
                [self.exe, "record", "--pid", str(pid), "--duration", "3600",
                 "--rate", str(self.rate), "--format", "raw", "--nonblocking",
                 "--output", str(self.dir / f"{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def result(self) -> dict[str, dict[str, float]]:
        """Per process: the share of its samples per kind, in percent."""
        shares = {}
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes what it has, and stops
        for name, proc in self.procs.items():
            proc.wait(60)
            raw = self.dir / f"{name}.txt"
            if raw.exists():
                counts = kinds(raw)
                total = sum(counts.values()) or 1
                shares[name] = {k: 100 * n / total for k, n in counts.most_common()}
        return shares
