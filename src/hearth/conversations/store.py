"""Stored Responses API answers: saved when answered, read back by id for their owner only (the
key that created them; another key is told they do not exist), followed back through
`previous_response_id` to rebuild a conversation, and pruned after the retention period."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import ColumnElement, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hearth.db.engine import utcnow
from hearth.db.outage import database_errors
from hearth.db.schema import responses

log = logging.getLogger(__name__)

RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{32}$")
PRUNE_INTERVAL = 300.0  # seconds between prunings
MAX_CHAIN = 1000  # responses followed back through previous_response_id, at most

Item = dict[str, Any]


def is_response_id(value: str) -> bool:
    """Whether `value` has the form of a response id (else it names nothing, unlooked-up)."""
    return RESPONSE_ID.fullmatch(value) is not None


@dataclass
class StoredResponse:
    id: str
    owner: str | None
    model: str
    status: str
    input_items: list[Item]
    body: dict[str, Any]  # the Response object
    previous_response_id: str | None = None
    created_at: dt.datetime = field(default_factory=utcnow)


@dataclass
class ItemPage:
    data: list[Item]
    has_more: bool


class ResponseStore:
    def __init__(self, engine: AsyncEngine, retention_days: float) -> None:
        self.engine = engine
        self.retention_days = retention_days
        self._task: asyncio.Task[None] | None = None

    async def save(self, stored: StoredResponse) -> None:
        row = {
            "id": stored.id,
            "owner": stored.owner,
            "created_at": stored.created_at,
            "model": stored.model,
            "status": stored.status,
            "previous_response_id": stored.previous_response_id,
            "input_items": json.dumps(stored.input_items),
            "body": json.dumps(stored.body),
        }
        with database_errors("store the response"):
            async with self.engine.begin() as conn:
                await conn.execute(insert(responses).values(row))

    async def get(self, response_id: str, owner: str | None) -> dict[str, Any] | None:
        """The Response object, or None if there is none of that id for this owner."""
        if not is_response_id(response_id):
            return None
        with database_errors("read stored responses"):
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(select(responses.c.body).where(_mine(response_id, owner)))
                ).first()
        return None if row is None else dict(json.loads(row.body))

    async def conversation(self, response_id: str, owner: str | None) -> list[Item] | None:
        """Every item of the conversation up to and including this response (each response's
        input items, then its output), oldest first; None if there is no such response."""
        if not is_response_id(response_id):
            return None
        turns: list[list[Item]] = []
        with database_errors("read stored responses"):
            async with self.engine.connect() as conn:
                next_id: str | None = response_id
                while next_id is not None and len(turns) < MAX_CHAIN:
                    turn = await _turn(conn, next_id, owner)
                    if turn is None:
                        if not turns:
                            return None
                        break  # an earlier turn was deleted or pruned: start from there
                    items, next_id = turn
                    turns.append(items)
        return [item for turn in reversed(turns) for item in turn]

    async def input_items(
        self,
        response_id: str,
        owner: str | None,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
    ) -> ItemPage | None:
        if not is_response_id(response_id):
            return None
        with database_errors("read stored responses"):
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(responses.c.input_items).where(_mine(response_id, owner))
                    )
                ).first()
        if row is None:
            return None
        items: list[Item] = json.loads(row.input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return ItemPage(items[:limit], len(items) > limit)

    async def delete(self, response_id: str, owner: str | None) -> bool:
        if not is_response_id(response_id):
            return False
        with database_errors("delete the response"):
            async with self.engine.begin() as conn:
                result = await conn.execute(delete(responses).where(_mine(response_id, owner)))
        return bool(result.rowcount)

    async def prune(self, now: dt.datetime | None = None) -> int:
        """Delete responses older than the retention (none when it is 0: kept forever)."""
        if self.retention_days <= 0:
            return 0
        cutoff = (now or utcnow()) - dt.timedelta(days=self.retention_days)
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(responses).where(responses.c.created_at < cutoff))
        return int(result.rowcount or 0)

    def start(self) -> None:
        """Prune in the background every few minutes."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                if pruned := await self.prune():
                    log.info("responses: %d stored answers past their retention deleted", pruned)
            except Exception as exc:  # the database may be down; try again next round
                log.warning("responses: pruning failed: %s", type(exc).__name__)
            await asyncio.sleep(PRUNE_INTERVAL)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _mine(response_id: str, owner: str | None) -> ColumnElement[bool]:
    """The row of this id, if `owner` owns it."""
    owned = responses.c.owner.is_(None) if owner is None else responses.c.owner == owner
    return (responses.c.id == response_id) & owned


async def _turn(
    conn: AsyncConnection, response_id: str, owner: str | None
) -> tuple[list[Item], str | None] | None:
    """(one response's input and output items, the id of the response before it)."""
    query = select(
        responses.c.input_items, responses.c.body, responses.c.previous_response_id
    ).where(_mine(response_id, owner))
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    output = json.loads(row.body).get("output") or []
    return [*json.loads(row.input_items), *output], row.previous_response_id
