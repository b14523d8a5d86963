"""The usage side of a running Hearth: rows recorded from memory on the request path, written in
batches by one background loop, rolled up hourly and pruned after the retention period."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.config import UsageSettings
from hearth.db.engine import utcnow
from hearth.usage.rollup import prune, roll_up
from hearth.usage.writer import UsageWriter

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 300.0  # seconds between roll-ups and pruning


class UsageRecorder:
    def __init__(self, engine: AsyncEngine, settings: UsageSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.writer = UsageWriter(engine)
        self._task: asyncio.Task[None] | None = None
        self._db_ok = True
        self._last_housekeeping = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def record(self, row: dict[str, Any]) -> None:
        """Queue one usage row (the columns of the `usage` table); no waiting."""
        self.writer.record(row)

    async def flush(self) -> int:
        """Write what is buffered now; raises if the database fails (the rows stay buffered)."""
        return await self.writer.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            await self.sync()

    async def sync(self) -> None:
        """Write buffered rows and, every few minutes, roll up and prune; a database outage
        is logged once and the rows wait for the next try."""
        try:
            await self.flush()
            if time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_INTERVAL:
                self._last_housekeeping = time.monotonic()
                await self.housekeeping()
        except Exception as exc:  # the loop must outlive any one failure
            if self._db_ok:
                log.warning(
                    "database unavailable (%s: %s): %d usage rows buffered",
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                    self.writer.pending,
                )
            self._db_ok = False
            return
        if not self._db_ok:
            log.info("database reachable again; buffered usage written")
        self._db_ok = True

    async def housekeeping(self) -> None:
        now = utcnow()
        hours = await roll_up(self.engine, now)
        pruned = await prune(self.engine, now, self.settings.retention_days)
        if hours or pruned:
            log.info("usage: %d hours rolled up, %d old rows pruned", hours, pruned)

    async def aclose(self) -> None:
        """Stop the loop and write every buffered row (a graceful shutdown loses none)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            written = await self.flush()
            if written:
                log.info("usage: %d rows written at shutdown", written)
        except Exception as exc:
            log.error(
                "usage: %d rows could not be written at shutdown: %s", self.writer.pending, exc
            )
