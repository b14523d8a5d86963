"""The usage side of a running Hearth: rows recorded from memory on the request path, written in
batches by one background loop, rolled up hourly and pruned after the retention period."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.config import UsageSettings
from hearth.db.engine import utcnow
from hearth.db.outage import ping
from hearth.db.schema import usage
from hearth.usage.journal import UsageJournal
from hearth.usage.rollup import prune, roll_up
from hearth.usage.writer import UsageWriter

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 300.0  # seconds between roll-ups and pruning


class UsageRecorder:
    def __init__(
        self, engine: AsyncEngine, settings: UsageSettings, journal: UsageJournal | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.journal = journal
        self.writer = UsageWriter(engine, journal)
        self._task: asyncio.Task[None] | None = None
        self._db_ok = True
        self._last_housekeeping = 0.0

    async def start(self) -> None:
        """Take back what a previous run journaled but never wrote (it was killed), then start
        writing in the background."""
        if self.journal is not None:
            rows, sealed = self.journal.leftovers()
            if rows:
                fresh = await _not_yet_written(self.engine, rows)
                self.writer.recover(fresh)
                log.info(
                    "usage: %d rows recovered from the journal of a run that did not stop "
                    "cleanly (%d were already written)",
                    len(fresh),
                    len(rows) - len(fresh),
                )
                try:
                    await self.flush()
                except Exception as exc:  # the loop tries again; the rows stay journaled
                    log.warning("usage: recovered rows not written yet: %s", type(exc).__name__)
            else:
                self.journal.written(sealed)
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
            touched = await self.flush() > 0  # nothing buffered: the database was not asked
            if time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_INTERVAL:
                self._last_housekeeping = time.monotonic()
                await self.housekeeping()
                touched = True
            if not self._db_ok and not touched:
                await ping(self.engine)  # before saying it is back, see that it is
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
                "usage: %d rows could not be written at shutdown (kept in the journal for the "
                "next start): %s",
                self.writer.pending,
                exc,
            )
        if self.journal is not None:
            self.journal.close()


async def _not_yet_written(engine: AsyncEngine, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The journaled rows the database does not hold (a run killed between writing a batch
    and forgetting its segment wrote them already). A row is known by request id and time."""
    ids = {row["request_id"] for row in rows}
    try:
        async with engine.connect() as conn:
            query = select(usage.c.request_id, usage.c.time).where(usage.c.request_id.in_(ids))
            known = {(r.request_id, r.time) for r in (await conn.execute(query)).all()}
    except Exception:  # the database is down: write them all later rather than lose any
        return rows
    return [row for row in rows if (row["request_id"], _utc(row["time"])) not in known]


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).replace(tzinfo=None)
