"""Budget events: a key or team that reaches a threshold of its budget (50/80/100% by default)
emits, once per threshold and budget period, an audit entry, a metric and, with a webhook, a
delivery owed to `BudgetWebhook`. "Once" holds across replicas and restarts: the event is a row
under a unique constraint, and only the replica whose insert succeeds emits it. Spend is read
from memory (`Access.budget_use`), so watching costs no database query until a threshold is
reached."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.auth.access import Access
from hearth.auth.keys import KeyRecord
from hearth.budget import Budget
from hearth.config import BudgetEventSettings
from hearth.db.engine import utcnow
from hearth.db.schema import audit_log, budget_events
from hearth.observability.metrics import HearthMetrics

log = logging.getLogger(__name__)

EVENT_TYPE = "budget.threshold_reached"

Seen = tuple[str, str, dt.datetime, int]  # subject, period, period start, threshold


@dataclass(frozen=True)
class BudgetEvent:
    subject: str  # "key:<id>" or "team:<name>"
    budget: Budget
    period_start: dt.datetime
    threshold: int  # percent
    used: float  # share of the budget spent, as this replica knows it

    @property
    def seen(self) -> Seen:
        return (self.subject, self.budget.period, self.period_start, self.threshold)

    @property
    def id(self) -> str:
        """The same on every replica and at every try: receivers may deduplicate on it."""
        return f"{self.subject}/{self.budget.period}/{self.period_start:%Y-%m-%d}/{self.threshold}"


class BudgetWatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        access: Access,
        settings: BudgetEventSettings,
        metrics: HearthMetrics | None = None,
        on_event: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.access = access
        self.settings = settings
        self.metrics = metrics
        self.on_event = on_event  # a delivery is owed: wake the webhook sender
        self._seen: set[Seen] = set()
        self._task: asyncio.Task[None] | None = None
        self._db_ok = True

    async def start(self) -> None:
        if self.metrics is not None:  # each configured threshold at 0 from the start
            settings = self.settings
            for kind, overrides in (("key", settings.keys), ("team", settings.teams)):
                own = {t for thresholds in overrides.values() for t in thresholds}
                for threshold in {*settings.thresholds, *own}:
                    self.metrics.budget_events.labels(kind, str(threshold))
        try:
            await self._load_seen()
        except Exception as exc:  # the inserts still keep it once; this only saves queries
            log.warning("budget events: earlier events not read (%s)", type(exc).__name__)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _load_seen(self) -> None:
        since = Budget(1, "tokens", "month").window(utcnow())
        query = select(
            budget_events.c.subject,
            budget_events.c.period,
            budget_events.c.period_start,
            budget_events.c.threshold,
        ).where(budget_events.c.period_start >= since)
        async with self.engine.connect() as conn:
            self._seen = {tuple(row) for row in (await conn.execute(query)).all()}

    def thresholds(self, subject: str, keys: dict[str, KeyRecord]) -> list[int]:
        """The percentages that emit for `subject` (`keys`: the key records by id)."""
        kind, _, name = subject.partition(":")
        if kind == "team":
            return self.settings.teams.get(name, self.settings.thresholds)
        record = keys.get(name)
        own = None if record is None else self.settings.keys.get(record.prefix)
        return self.settings.thresholds if own is None else own

    def due(self, now: dt.datetime) -> list[BudgetEvent]:
        """Thresholds reached and not yet emitted (here, or as far as this replica knows)."""
        events = []
        keys = {record.id: record for record in self.access.keys.values()}
        for subject, budget, used in self.access.budget_use():
            start = budget.window(now)
            for threshold in self.thresholds(subject, keys):
                if used * 100 >= threshold:
                    event = BudgetEvent(subject, budget, start, threshold, used)
                    if event.seen not in self._seen:
                        events.append(event)
        return events

    async def check(self) -> int:
        """Emit the events now due; returns how many this replica emitted."""
        emitted = 0
        for event in self.due(utcnow()):
            if await self._claim(event):
                emitted += 1
                self._announce(event)
            self._seen.add(event.seen)
        if emitted and self.on_event is not None:
            self.on_event()
        return emitted

    async def _claim(self, event: BudgetEvent) -> bool:
        """Insert the event and its audit entry in one transaction; False if it exists."""
        now = utcnow()
        keys = {record.id: record for record in self.access.keys.values()}
        payload = json.dumps(self.payload(event, now, keys), separators=(",", ":"))
        owed = now if self.settings.webhook is not None else None
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(budget_events).values(
                        time=now,
                        subject=event.subject,
                        period=event.budget.period,
                        period_start=event.period_start,
                        threshold=event.threshold,
                        payload=payload,
                        attempts=0,
                        next_attempt=owed,
                    )
                )
                await conn.execute(
                    insert(audit_log).values(
                        time=now,
                        actor="budget",
                        action="budget.threshold",
                        target=event.subject,
                        detail=json.dumps(
                            {
                                "threshold": event.threshold,
                                "used": round(event.used, 4),
                                "budget": str(event.budget),
                                "period_start": _iso(event.period_start),
                            }
                        ),
                    )
                )
        except IntegrityError:  # another replica, or this one before a restart, emitted it
            return False
        return True

    def payload(
        self, event: BudgetEvent, now: dt.datetime, keys: dict[str, KeyRecord]
    ) -> dict[str, Any]:
        """The webhook's body: who, which threshold, how much is spent, of what budget."""
        kind, _, name = event.subject.partition(":")
        who: dict[str, Any] = {"kind": kind, "name": name}
        if kind == "key":
            record = keys.get(name)
            if record is not None:  # the visible prefix and name, never more of the key
                who = {"kind": "key", "name": record.name, "prefix": record.prefix}
                who["team"] = record.team
        return {
            "id": event.id,
            "type": EVENT_TYPE,
            "time": _iso(now),
            "subject": who,
            "threshold": event.threshold,
            "used": round(event.used, 4),
            "spent": round(event.used * event.budget.amount, 6),
            "budget": {
                "amount": event.budget.amount,
                "unit": event.budget.unit,
                "period": event.budget.period,
                "text": str(event.budget),
            },
            "period_start": _iso(event.period_start),
        }

    def _announce(self, event: BudgetEvent) -> None:
        log.info(
            "budget: %s reached %d%% of %s (%.1f%% used)",
            event.subject,
            event.threshold,
            event.budget,
            event.used * 100,
        )
        if self.metrics is not None:
            kind = event.subject.partition(":")[0]
            self.metrics.budget_events.labels(kind, str(event.threshold)).inc()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval)
            try:
                await self.check()
            except Exception as exc:  # the loop must outlive any one failure
                if self._db_ok:
                    log.warning("budget events not written (%s); trying again", type(exc).__name__)
                self._db_ok = False
                continue
            self._db_ok = True

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _iso(value: dt.datetime) -> str:
    return value.isoformat() + "Z"
