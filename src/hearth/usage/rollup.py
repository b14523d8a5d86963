"""Hourly roll-ups of usage rows and the retention that prunes rolled-up raw rows.

Every replica runs this; the first hour not yet rolled up lives in `rollup_state` and advances
by compare-and-set in the same transaction as the roll-up, so an hour is rolled up exactly once."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import and_, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.db.schema import rollup_state, usage, usage_hourly
from hearth.usage.report import REQUESTS, next_rollup_hour
from hearth.usage.writer import hour_of

log = logging.getLogger(__name__)

# Rows of an hour may still arrive this long after it ended (batched writes, slow streams).
SETTLE = dt.timedelta(minutes=10)
GROUP = ("hour", "key_id", "team", "model", "deployment")


class _Lost(Exception):
    """Another replica rolled up the same hours first."""


async def roll_up(engine: AsyncEngine, now: dt.datetime) -> int:
    """Roll up every settled hour not yet rolled up; returns how many hours."""
    until = hour_of(now - SETTLE)
    try:
        async with engine.begin() as conn:
            start = await next_rollup_hour(conn)
            if start is None:
                first = (await conn.execute(select(func.min(usage.c.hour)))).scalar_one_or_none()
                start = min(first, until) if first is not None else until
                await conn.execute(insert(rollup_state).values(id=1, next_hour=start))
            if start >= until:
                return 0
            columns = [usage.c[name] for name in GROUP]
            summary = (
                select(
                    *columns,
                    REQUESTS,
                    func.sum(case((usage.c.status >= 400, 1), else_=0)),
                    func.sum(usage.c.prompt_tokens),
                    func.sum(usage.c.completion_tokens),
                    func.sum(usage.c.cost),
                )
                .where(and_(usage.c.hour >= start, usage.c.hour < until))
                .group_by(*columns)
            )
            targets = [*GROUP, "requests", "errors", "prompt_tokens", "completion_tokens", "cost"]
            await conn.execute(insert(usage_hourly).from_select(targets, summary))
            moved = await conn.execute(
                update(rollup_state)
                .where(and_(rollup_state.c.id == 1, rollup_state.c.next_hour == start))
                .values(next_hour=until)
            )
            if moved.rowcount != 1:
                raise _Lost
    except (_Lost, IntegrityError):
        return 0
    return int((until - start).total_seconds() // 3600)


async def prune(engine: AsyncEngine, now: dt.datetime, retention_days: float) -> int:
    """Delete raw rows older than the retention that are already in the roll-ups."""
    cutoff = now - dt.timedelta(days=retention_days)
    async with engine.begin() as conn:
        rolled = await next_rollup_hour(conn)
        if rolled is None:
            return 0
        result = await conn.execute(
            delete(usage).where(and_(usage.c.time < cutoff, usage.c.hour < rolled))
        )
    return int(result.rowcount or 0)
