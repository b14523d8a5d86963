"""What keys and teams have spent this day and month, for budgets, without a database query per
request: totals read from the database at each refresh, plus what this replica counted since.
Across replicas a budget can therefore be overrun by what the others spend within one refresh
interval."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.budget import Budget
from hearth.db.engine import utcnow
from hearth.usage.report import totals

Periods = ("day", "month")


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    return Budget(1, "tokens", "day" if period == "day" else "month").window(now)


class SpendTracker:
    def __init__(self) -> None:
        # (subject, period) → [tokens, cost]; subjects are "key:<id>" and "team:<name>".
        self._base: dict[tuple[str, str], list[float]] = {}
        self._local: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._starts: dict[str, dt.datetime] = {}

    def spent(self, subject: str, budget: Budget) -> float:
        key = (subject, budget.period)
        base = self._base.get(key, (0.0, 0.0))
        local = self._local.get(key, (0.0, 0.0))
        index = 0 if budget.unit == "tokens" else 1
        return base[index] + local[index]

    def add(self, subjects: list[str], tokens: int, cost: float) -> None:
        for subject in subjects:
            for period in Periods:
                figures = self._local[(subject, period)]
                figures[0] += tokens
                figures[1] += cost

    def snapshot(self) -> dict[tuple[str, str], list[float]]:
        """What was counted locally before a flush; pass it to `refresh` after the flush."""
        return {k: list(v) for k, v in self._local.items()}

    async def refresh(
        self, engine: AsyncEngine, counted: dict[tuple[str, str], list[float]]
    ) -> None:
        """Replace the base by the database's totals (which now hold `counted`)."""
        now = utcnow()
        base: dict[tuple[str, str], list[float]] = {}
        for period in Periods:
            since = period_start(period, now)
            for by, prefix in (("key", "key:"), ("team", "team:")):
                for row in await totals(engine, since, [by]):  # type: ignore[list-item]
                    if row[by] is None:
                        continue
                    tokens = row["prompt_tokens"] + row["completion_tokens"]
                    base[(prefix + str(row[by]), period)] = [float(tokens), float(row["cost"])]
        self._base = base
        for key, figures in counted.items():
            local = self._local[key]
            local[0] -= figures[0]
            local[1] -= figures[1]
