"""Database engines and column types shared by every service's store.

Each service owns its tables. On SQLite (the default) each service has its own file
``var/<service>.db``; on PostgreSQL (``DATABASE_URL``) each service has its own schema
in one database, so table names never collide and ownership stays visible.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Integer,
    MetaData,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

JsonColumn = JSON().with_variant(JSONB(), "postgresql")
IdType = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def service_database_url(service: str, database_url: str | None, var_dir: str | Path) -> str:
    """The URL a service uses: ``database_url`` if given, else its own SQLite file."""
    if database_url:
        return database_url
    path = Path(var_dir).resolve() / f"{service}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _green_psycopg() -> bool:
    """Let psycopg2 yield to other green threads while it waits on the server. True when
    it does (then libpq connects asynchronously and ignores its own connect_timeout)."""
    try:
        from eventlet import patcher
    except ImportError:  # pragma: no cover - eventlet is a dependency
        return False
    if patcher.is_monkey_patched("socket"):
        from psycogreen.eventlet import patch_psycopg

        patch_psycopg()
        return True
    return False


def _connect_within(engine: Engine, timeout_s: float) -> None:
    """Give up connecting after ``timeout_s`` under eventlet.

    A green psycopg2 connects asynchronously, and libpq applies ``connect_timeout`` only to
    blocking connects: a server that accepts the TCP connection and then says nothing (a
    partition, a hung host) would hold the request, the relay or the consumer forever. The
    timeout is raised as the driver's OperationalError, which callers already treat as
    "the database is unavailable" (a 503, a retry later).
    """
    from eventlet.timeout import Timeout

    @event.listens_for(engine, "do_connect")
    def _do_connect(dialect: Any, _rec: Any, cargs: Any, cparams: Any) -> Any:
        timer = Timeout(timeout_s)
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except Timeout as exc:
            if exc is not timer:
                raise
            raise dialect.loaded_dbapi.OperationalError(
                f"no answer from the database server within {timeout_s:g} s"
            ) from None
        finally:
            timer.cancel()


DEFAULT_CONNECT_TIMEOUT_S = 5.0


def make_engine(
    url: str,
    *,
    schema: str | None = None,
    pool_size: int = 10,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> Engine:
    """An engine for one service. ``schema`` places its tables in a PostgreSQL schema.

    On PostgreSQL a connection attempt gives up after ``connect_timeout_s``, and TCP
    keepalives and a user timeout find a connection whose server went silent, so a lost
    database is an error the caller can answer (503, retry later), never a hang.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        # One connection per process: SQLite has one writer anyway, and serialising on the
        # pool (a green wait) is better than blocking the whole hub in sqlite's busy loop.
        engine = create_engine(
            u,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        _sqlite_pragmas(engine)
        return engine
    if u.get_backend_name() == "postgresql":
        if u.drivername == "postgresql":
            u = u.set(drivername="postgresql+psycopg2")
        green = _green_psycopg()
        engine = create_engine(
            u,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": max(1, math.ceil(connect_timeout_s)),  # blocking connects
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                "tcp_user_timeout": 30_000,  # ms: sent data unacknowledged this long → error
            },
        )
        if green:
            _connect_within(engine, connect_timeout_s)
        if schema:
            with engine.begin() as conn:
                # replicas starting together would race on IF NOT EXISTS (a unique violation)
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DDL_LOCK})
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            engine = engine.execution_options(schema_translate_map={None: schema})
        return engine
    raise ValueError(f"unsupported database {u.get_backend_name()!r}; use sqlite or postgresql")


# Execution option: False for a transaction whose loss in a power cut is harmless (the outbox
# relay marking rows sent: lost, the rows are published again and consumers drop them). On
# SQLite such a commit does not wait for the fsync; the next durable commit makes it durable
# too (the WAL is written in order). Every other commit waits for its fsync: a 2xx, or an ack,
# means the change is on disk.
DURABLE = "gridflow_durable"


def non_durable(engine: Engine) -> Engine:
    """The engine (same pool) for transactions that need not wait for the disk."""
    return engine.execution_options(**{DURABLE: False})


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # a 2xx means the report is on disk
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # SQLite sets the safety level per connection and only outside a transaction
        level = "FULL" if conn.get_execution_options().get(DURABLE, True) else "NORMAL"
        if conn.info.get("synchronous") != level:
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
            conn.info["synchronous"] = level
        conn.exec_driver_sql("BEGIN IMMEDIATE")


DDL_LOCK = 0x67726964  # PostgreSQL advisory lock held while a service makes its tables


class SchemaMismatch(RuntimeError):
    """The database holds tables of an older gridflow that lack columns this one needs."""


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create missing tables, then check that existing ones have every column we map.

    gridflow has no migrations yet: a table from an older version fails the start with a
    message saying what to do, instead of failing the first query that touches it.
    """
    if is_postgres(engine):
        # N replicas of a service start at once on one database: one makes the tables,
        # the others then find them (create_all's checks and CREATEs are not atomic)
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": DDL_LOCK})
            try:
                _create_and_check(engine, metadata)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": DDL_LOCK})
                lock.commit()
        return
    _create_and_check(engine, metadata)


def _create_and_check(engine: Engine, metadata: MetaData) -> None:
    metadata.create_all(engine)
    inspector = inspect(engine)
    where = (engine.get_execution_options().get("schema_translate_map") or {}).get(None)
    for table in metadata.sorted_tables:
        _create_missing_indexes(engine, table, inspector, where)
        have = {c["name"] for c in inspector.get_columns(table.name, schema=where)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise SchemaMismatch(
                f"table {table.name} ({engine.url.render_as_string(hide_password=True)}) "
                f"lacks columns {', '.join(missing)}: it was made by an older gridflow. "
                "Move the database away (the demo's var/ is disposable) or migrate it."
            )


def _create_missing_indexes(engine: Engine, table: Any, inspector: Any,
                            schema: str | None) -> None:
    """Indexes a newer gridflow declares on a table an older one made (``create_all``
    makes only missing tables), and the indexes they replace dropped (the table's
    ``info["superseded_indexes"]``). Built once, at the first start after an upgrade; on a
    big table that start takes as long as the index builds (25 s at a million cases)."""
    have = {i["name"] for i in inspector.get_indexes(table.name, schema=schema)}
    for name in set(table.info.get("superseded_indexes", ())) & have:
        log.warning("dropping index %s on %s (superseded)", name, table.name)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS {f"{schema}." if schema else ""}"{name}"')
    columns = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
    for index in table.indexes:
        if index.name and index.name not in have and {c.name for c in index.columns} <= columns:
            log.warning("creating index %s on %s (declared since the table was made)",
                        index.name, table.name)
            index.create(engine, checkfirst=True)


def next_prefix(code: str) -> str | None:
    """The smallest digit string above every string that starts with ``code`` (None when
    ``code`` is all nines: nothing is above)."""
    stripped = code.rstrip("9")
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def code_range(col: Any, code: str) -> list[Any]:
    """The rows whose ``col`` starts with ``code`` (a grid subtree) as an index range, not
    a LIKE, which neither database serves from a B-tree here."""
    upper = next_prefix(code)
    return [col >= code, *([col < upper] if upper is not None else [])]


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
