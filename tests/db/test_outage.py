"""The database-outage boundary: which errors are outages, the 503 they become, and the probe."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc as sa
from sqlalchemy.ext.asyncio import create_async_engine

from hearth.db.outage import database_errors, is_outage, ping
from hearth.errors import DatabaseUnavailable


class DriverError(Exception):
    pass


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        OSError("network is unreachable"),
        sa.OperationalError("SELECT 1", {}, DriverError("unable to open database file")),
        sa.InterfaceError("SELECT 1", {}, DriverError("connection is closed")),
        sa.DBAPIError("SELECT 1", {}, DriverError("not currently accepting connections")),
        sa.TimeoutError("QueuePool limit reached"),
        sa.DisconnectionError("gone"),
    ],
    ids=type,
)
def test_outages_become_database_unavailable(error: Exception) -> None:
    assert is_outage(error)
    refused = pytest.raises(DatabaseUnavailable, match="cannot create a key now")
    with refused as caught, database_errors("create a key"):
        raise error
    assert caught.value.status_code == 503
    assert caught.value.code == "database_unavailable"
    assert caught.value.__cause__ is error
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    "error",
    [
        sa.IntegrityError("INSERT", {}, DriverError("duplicate key")),
        sa.DataError("INSERT", {}, DriverError("value too long")),
        ValueError("a bug"),
    ],
    ids=type,
)
def test_other_errors_pass_unchanged(error: Exception) -> None:
    assert not is_outage(error)
    with pytest.raises(type(error)), database_errors("create a key"):
        raise error


async def test_ping_asks_the_database(tmp_path: Path) -> None:
    working = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'ok.db'}")
    missing = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'x.db'}")
    try:
        await ping(working)
        with pytest.raises(sa.OperationalError):
            await ping(missing)
    finally:
        await working.dispose()
        await missing.dispose()
