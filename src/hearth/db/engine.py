"""The async database engine for the settings, and bringing its schema up to date."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hearth.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
# Replicas starting together on PostgreSQL migrate one at a time.
_MIGRATION_LOCK = 7_362_514


def utcnow() -> dt.datetime:
    """Now, as the naive UTC time every table stores."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL: `database_url` with an async driver, else SQLite in the data dir."""
    if not settings.database_url:
        return f"sqlite+aiosqlite:///{settings.data_dir / 'hearth.db'}"
    url = make_url(settings.database_url)
    driver = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    driver["sqlite"] = "sqlite+aiosqlite"
    if url.drivername in driver:
        url = url.set(drivername=driver[url.drivername])
    return url.render_as_string(hide_password=False)


def create_engine(settings: Settings) -> AsyncEngine:
    url = database_url(settings)
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # The writer and the readers share the file: wait for a lock rather than fail.
        return create_async_engine(url, connect_args={"timeout": 15})
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


async def migrate(engine: AsyncEngine) -> None:
    """Run the Alembic migrations up to the newest."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines at every start
    from alembic import command
    from alembic.config import Config

    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
