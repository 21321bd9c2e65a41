"""Read-only SQL over the services' tables, and the run's throwaway PostgreSQL database."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url


class Databases:
    """Read-only SQL over each service's tables (its SQLite file, or its PG schema)."""

    def __init__(self, database_url: str | None, var_dir: Path) -> None:
        self.database_url, self.var_dir = database_url, var_dir
        self._engines: dict[str, Engine] = {}

    def engine(self, service: str) -> Engine:
        if service not in self._engines:
            url = self.database_url or f"sqlite:///{self.var_dir / f'{service}.db'}"
            self._engines[service] = create_engine(url)
        return self._engines[service]

    def table(self, service: str, name: str) -> str:
        return f'"{service}".{name}' if self.database_url else name

    def rows(self, service: str, sql: str) -> list[Any]:
        """``sql`` with ``{name}`` placeholders for the service's tables."""
        query = sql.format_map(_Tables(self, service))
        with self.engine(service).connect() as conn:
            return list(conn.execute(text(query)))

    def unsent(self, service: str) -> int:
        return self.rows(service, "SELECT count(*) FROM {outbox} WHERE sent_at IS NULL")[0][0]

    def dispose(self) -> None:
        for e in self._engines.values():
            e.dispose()


class _Tables(dict):
    def __init__(self, dbs: Databases, service: str) -> None:
        super().__init__()
        self.dbs, self.service = dbs, service

    def __missing__(self, key: str) -> str:
        return self.dbs.table(self.service, key)


def fresh_database(admin_url: str) -> str:
    name = f"gridflow_chaos_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :n"), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()
