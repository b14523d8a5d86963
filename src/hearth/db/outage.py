"""Database outages as one Hearth error: the boundary where SQLAlchemy's and the driver's
connection failures become `DatabaseUnavailable` (as `hearth.upstream.client` is for aiohttp's),
and a cheap probe of whether the database answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.errors import DatabaseUnavailable

# Not outages: a row or value the database refused is the caller's (or Hearth's) fault.
_NOT_OUTAGES = (sa.IntegrityError, sa.DataError)
# Outages outside DBAPIError: a refused or timed-out connection (OSError covers
# ConnectionError and TimeoutError), a pool with no free connection, a dropped one.
_OUTAGES = (OSError, sa.TimeoutError, sa.DisconnectionError)


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached or used right now."""
    if isinstance(error, sa.DBAPIError):
        return not isinstance(error, _NOT_OUTAGES)
    return isinstance(error, _OUTAGES)


def describe(error: BaseException) -> str:
    """One short line about a database error, for a message or a log line."""
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@contextmanager
def database_errors(action: str) -> Iterator[None]:
    """Run the block; an outage inside it becomes `DatabaseUnavailable` saying Hearth cannot
    `action` now (a 503 over HTTP, one line in the command line). Other errors pass."""
    try:
        yield
    except Exception as error:
        if not is_outage(error):
            raise
        raise DatabaseUnavailable(
            f"The database is unavailable, so Hearth cannot {action} now ({describe(error)}). "
            "Requests are still served with the keys Hearth has cached; retry once the "
            "database is back."
        ) from error


async def ping(engine: AsyncEngine) -> None:
    """`SELECT 1`: raises if the database does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
