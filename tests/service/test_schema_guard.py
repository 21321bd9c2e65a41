"""A database made by an older gridflow fails the start with what to do, not a 500 later."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table

from shared.db import SchemaMismatch, create_tables, make_engine


def _cases(metadata: MetaData, *extra: Column) -> Table:
    return Table("cases", metadata, Column("pk", Integer, primary_key=True),
                 Column("case_id", String(64)), *extra)


def test_a_table_lacking_columns_is_refused_naming_them(
    database_url: str | None, tmp_path: Path
) -> None:
    url = database_url or f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url, schema="intake")
    old = MetaData()
    _cases(old)
    create_tables(engine, old)  # what an older version made

    new = MetaData()
    _cases(new, Column("severity", String(16)), Column("reworks", Integer))
    with pytest.raises(SchemaMismatch, match=r"table cases .* lacks columns severity, reworks"):
        create_tables(engine, new)
    create_tables(engine, old)  # the same version starts again without complaint
    engine.dispose()
