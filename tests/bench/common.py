"""What the benchmarks share: a throwaway RabbitMQ vhost (the tests' own), a throwaway
PostgreSQL database, and percentiles."""

from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message="(?s).*Eventlet is deprecated")  # nameko's import

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from support import RABBIT_API, vhost  # noqa: E402, F401 - the benchmarks' vhost helper


def pg_database(admin_url: str, name: str, create: bool) -> str:
    """Make (or drop) the database ``name`` on the server of ``admin_url``; its URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if create:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :n"), {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
