"""Usage rows, buffered in memory and written in batches off the request path.

`record()` only appends to a list; `flush()` (called by the accounting loop and at shutdown)
writes what is buffered. A failed write keeps the rows for the next try, up to `max_buffer`
rows, past which the oldest are dropped with a warning rather than growing without bound."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.db.schema import usage
from hearth.usage.journal import UsageJournal

log = logging.getLogger(__name__)

# Rows per INSERT. SQLAlchemy prepares a batch's parameters on the event loop without yielding
# (about 12 µs a row), so batches stay small: requests arriving during a flush wait ~1 ms, not ~12.
BATCH = 100


def hour_of(time: dt.datetime) -> dt.datetime:
    return time.replace(minute=0, second=0, microsecond=0)


class UsageWriter:
    def __init__(
        self, engine: AsyncEngine, journal: UsageJournal | None = None, max_buffer: int = 200_000
    ) -> None:
        self.engine = engine
        self.journal = journal
        self.max_buffer = max_buffer
        self.dropped = 0
        self._pending: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, row: dict[str, Any]) -> None:
        """Queue one row: the columns of the `usage` table but `hour`; `time` may be a
        time.time() value (turned into a datetime at flush time, off the request path). With a
        journal, the row is on disk when this returns."""
        if self.journal is not None:
            self.journal.append(row)
        self._pending.append(row)
        if len(self._pending) > self.max_buffer:
            excess = len(self._pending) - self.max_buffer
            del self._pending[:excess]
            self.dropped += excess
            log.warning("usage buffer full (database unreachable?): dropped %d rows", excess)

    async def flush(self) -> int:
        """Write every buffered row; returns how many. Raises if the database fails (the rows
        stay buffered)."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return 0
            sealed = None if self.journal is None else self.journal.seal()
            for row in batch:
                if not isinstance(row["time"], dt.datetime):
                    row["time"] = dt.datetime.fromtimestamp(row["time"], dt.UTC).replace(
                        tzinfo=None
                    )
                row.setdefault("hour", hour_of(row["time"]))
                row.setdefault("escalated", False)  # rows journaled before the column
                row.setdefault("audio_seconds", 0.0)  # likewise
            written = 0
            try:
                async with self.engine.begin() as conn:
                    for start in range(0, len(batch), BATCH):
                        await conn.execute(insert(usage), batch[start : start + BATCH])
                        written += min(BATCH, len(batch) - start)
            except BaseException:
                self._pending[:0] = batch  # the transaction rolled back: all of them again
                raise
            if self.journal is not None and sealed is not None:
                self.journal.written(sealed)
            return written

    def recover(self, rows: list[dict[str, Any]]) -> None:
        """Buffer rows a previous run journaled but never wrote (they are in a sealed segment
        already, so they are not journaled again)."""
        self._pending[:0] = rows
