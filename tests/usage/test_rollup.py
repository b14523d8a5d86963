"""Batched usage writes, hourly roll-ups (exactly once), retention, and reports that combine
roll-ups with raw rows. On a real SQLite file and, where reachable, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.config import Settings
from hearth.db.engine import create_engine, migrate
from hearth.db.schema import usage, usage_hourly
from hearth.usage.report import parse_since, totals
from hearth.usage.rollup import prune, roll_up
from hearth.usage.writer import UsageWriter
from support.access import pg_database, reachable

NOW = dt.datetime(2026, 11, 22, 15, 30)


def row(time: dt.datetime, key: str = "k1", model: str = "m", status: int = 200) -> dict[str, Any]:
    return {
        "time": time,
        "request_id": "r",
        "key_id": key,
        "team": "t",
        "model": model,
        "deployment": "d",
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "cached": False,
        "status": status,
        "latency_ms": 10.0,
        "ttft_ms": 1.0,
        "cost": 0.5,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hearth.db'}"
        return
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    with pg_database() as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=database_url))
    await migrate(engine)
    yield engine
    await engine.dispose()


async def count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_writer_flushes_in_batches(engine: AsyncEngine) -> None:
    writer = UsageWriter(engine)
    for i in range(2500):
        writer.record(row(NOW - dt.timedelta(seconds=i)))
    assert writer.pending == 2500
    assert await writer.flush() == 2500
    assert writer.pending == 0 and await count(engine, usage) == 2500
    assert await writer.flush() == 0


async def test_a_failed_flush_keeps_the_rows(engine: AsyncEngine, tmp_path: Path) -> None:
    broken = create_engine(Settings(database_url=f"sqlite:///{tmp_path}/missing/dir/x.db"))
    writer = UsageWriter(broken, max_buffer=3)
    for _ in range(5):
        writer.record(row(NOW))
    assert writer.pending == 3 and writer.dropped == 2  # bounded
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        await writer.flush()
    assert writer.pending == 3
    writer.engine = engine
    assert await writer.flush() == 3
    await broken.dispose()


async def test_roll_up_and_report(engine: AsyncEngine) -> None:
    writer = UsageWriter(engine)
    for hours_ago in (30, 5, 5, 2):
        writer.record(row(NOW - dt.timedelta(hours=hours_ago)))
    writer.record(row(NOW - dt.timedelta(hours=5), key="k2", status=502))
    writer.record(row(NOW - dt.timedelta(minutes=1)))  # not settled: stays raw
    await writer.flush()
    before = await totals(engine, NOW - dt.timedelta(days=2), ["key"])

    # Two replicas at once: each hour is rolled up once.
    done = await asyncio.gather(roll_up(engine, NOW), roll_up(engine, NOW))
    assert sorted(done)[0] == 0 and sorted(done)[1] > 0
    assert await roll_up(engine, NOW) == 0
    assert await count(engine, usage_hourly) == 4  # three hours of k1, one of k2

    after = await totals(engine, NOW - dt.timedelta(days=2), ["key"])
    assert after == before
    by_key = {r["key"]: r for r in after}
    assert by_key["k1"]["requests"] == 5 and by_key["k1"]["prompt_tokens"] == 25
    assert by_key["k2"]["errors"] == 1 and by_key["k1"]["cost"] == pytest.approx(2.5)
    recent = await totals(engine, NOW - dt.timedelta(hours=3), ["model"])
    assert recent == [
        {
            "model": "m",
            "requests": 2,
            "errors": 0,
            "prompt_tokens": 10,
            "completion_tokens": 6,
            "cost": 1.0,
        }
    ]

    # Retention prunes raw rows that are rolled up; the report is unchanged.
    assert await prune(engine, NOW, retention_days=1) == 1
    assert await totals(engine, NOW - dt.timedelta(days=2), ["key"]) == before


def test_since_spans_and_dates() -> None:
    assert parse_since("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_since("90m", NOW) == NOW - dt.timedelta(minutes=90)
    assert parse_since("2026-11-01", NOW) == dt.datetime(2026, 11, 1)
    with pytest.raises(ValueError, match="7d"):
        parse_since("last week", NOW)
    for too_far in ("99999999d", "9" * 30 + "h", "1" * 400 + "m"):
        with pytest.raises(ValueError, match="before the year 1"):
            parse_since(too_far, NOW)
