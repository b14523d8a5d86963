"""The database: URLs, and migrations on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from hearth.config import Settings
from hearth.db.engine import create_engine, database_url, migrate
from support.access import pg_database, reachable

TABLES = {"api_keys", "usage", "usage_hourly", "rollup_state", "audit_log", "alembic_version"}


def test_default_is_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    url = database_url(Settings(data_dir=tmp_path))
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'hearth.db'}"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_url_gets_an_async_driver(given: str, used: str) -> None:
    assert database_url(Settings(database_url=given)) == used


async def _tables(settings: Settings) -> set[str]:
    engine = create_engine(settings)
    try:
        await migrate(engine)
        await migrate(engine)  # a second run is a no-op
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_migrations_create_the_tables_in_a_sqlite_file(tmp_path: Path) -> None:
    assert await _tables(Settings(data_dir=tmp_path / "data")) >= TABLES
    assert (tmp_path / "data" / "hearth.db").is_file()


@pytest.fixture
def postgres() -> Iterator[str]:
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    with pg_database() as url:
        yield url


async def test_migrations_create_the_tables_in_postgresql(postgres: str) -> None:
    assert await _tables(Settings(database_url=postgres)) >= TABLES
