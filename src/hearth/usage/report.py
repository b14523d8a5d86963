"""Usage totals since a time, grouped by key, team, model or deployment: hourly roll-ups for the
hours already rolled up, raw rows for the rest."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.db.engine import utcnow
from hearth.db.outage import database_errors
from hearth.db.schema import api_keys, rollup_state, usage, usage_hourly

GroupBy = Literal["key", "team", "model", "deployment"]
COLUMNS: dict[str, str] = {"key": "key_id", "team": "team", "model": "model"}
COLUMNS["deployment"] = "deployment"
# Requests: usage rows less those of rejected cascade attempts, which add tokens and cost to the
# request whose row follows them but are not requests of their own.
REQUESTS = func.sum(case((usage.c.escalated, 0), else_=1))
FIGURES = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost")


async def next_rollup_hour(conn: Any) -> dt.datetime | None:
    query = select(rollup_state.c.next_hour).where(rollup_state.c.id == 1)
    value: dt.datetime | None = (await conn.execute(query)).scalar_one_or_none()
    return value


async def totals(
    engine: AsyncEngine, since: dt.datetime, by: list[GroupBy]
) -> list[dict[str, Any]]:
    """[{<by...>, requests, errors, prompt_tokens, completion_tokens, cost}], largest cost first."""
    names = [COLUMNS[b] for b in by]
    async with engine.connect() as conn:
        rolled = await next_rollup_hour(conn)
        results: dict[tuple[Any, ...], list[float]] = {}
        raw = select(
            *[usage.c[n] for n in names],
            REQUESTS,
            func.sum(case((usage.c.status >= 400, 1), else_=0)),
            func.sum(usage.c.prompt_tokens),
            func.sum(usage.c.completion_tokens),
            func.sum(usage.c.cost),
        ).where(usage.c.time >= since)
        queries = [raw]
        if rolled is not None:
            queries[0] = raw.where(usage.c.hour >= rolled)
            hourly = select(
                *[usage_hourly.c[n] for n in names],
                func.sum(usage_hourly.c.requests),
                func.sum(usage_hourly.c.errors),
                func.sum(usage_hourly.c.prompt_tokens),
                func.sum(usage_hourly.c.completion_tokens),
                func.sum(usage_hourly.c.cost),
            ).where(usage_hourly.c.hour >= since.replace(minute=0, second=0, microsecond=0))
            queries.append(hourly.where(usage_hourly.c.hour < rolled))
        for query in queries:
            if names:
                query = query.group_by(*[query.selected_columns[i] for i in range(len(names))])
            for found in (await conn.execute(query)).all():
                group = tuple(found[: len(names)])
                figures = [float(v or 0) for v in found[len(names) :]]
                if figures[0] == 0:
                    continue
                into = results.setdefault(group, [0.0] * len(FIGURES))
                for i, value in enumerate(figures):
                    into[i] += value
    rows = []
    for group, figures in results.items():
        row: dict[str, Any] = dict(zip(by, group, strict=True))
        row.update(
            {
                f: (round(v, 6) if f == "cost" else int(v))
                for f, v in zip(FIGURES, figures, strict=True)
            }
        )
        rows.append(row)
    rows.sort(key=lambda r: (-r["cost"], -r["requests"]))
    return rows


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """'7d', '24h', '30m' ago, or a date/time (UTC); ValueError saying so for anything else,
    a span reaching back past the calendar's start included."""
    span = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([dhm])\s*$", text)
    if span:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[span[2]]
        try:
            return now - dt.timedelta(**{unit: float(span[1])})
        except OverflowError:
            raise ValueError(
                f"{text.strip()!r} reaches back before the year 1; use a shorter span or a date"
            ) from None
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a span like 7d, 24h, 30m, or a date") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


async def usage_report(engine: AsyncEngine, since_text: str, by: GroupBy) -> list[dict[str, Any]]:
    """Rows of totals; keys are shown by prefix and name."""
    since = parse_since(since_text, utcnow())
    with database_errors("report usage"):
        rows = await totals(engine, since, [by])
        names = await key_names(engine) if by == "key" else {}
    if by == "key":
        for row in rows:
            row["key"] = names.get(row["key"], row["key"]) if row["key"] else None
    return rows


async def key_names(engine: AsyncEngine) -> dict[str, str]:
    """How a report shows a key: its visible prefix and name (never more of it)."""
    query = select(api_keys.c.id, api_keys.c.prefix, api_keys.c.name)
    async with engine.connect() as conn:
        return {row.id: f"{row.prefix} ({row.name})" for row in (await conn.execute(query)).all()}
