"""Delivering budget events to a webhook, off the request path: the `budget_events` rows that
owe a delivery are the outbox, so an event survives a receiver that is down and a restart of
Hearth. Each try is claimed by compare-and-set on its attempt count (one replica sends it), then
POSTed with an HMAC-SHA256 signature over the timestamp and the body; a failure is tried again
with doubling delays until `give_up_after`. Delivery is at least once: a replica killed between
sending and recording it sends again, with the same event id."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.config import BudgetWebhookSettings
from hearth.db.engine import utcnow
from hearth.db.schema import budget_events
from hearth.observability.metrics import HearthMetrics
from hearth.secrets import resolve_secret

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-hearth-signature"
TIMESTAMP_HEADER = "x-hearth-timestamp"
EVENT_ID_HEADER = "x-hearth-event-id"
POLL_INTERVAL = 1.0  # seconds between looks for deliveries owed (others' too), unless woken
BATCH = 20


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """'sha256=<hex>': HMAC-SHA256 with the secret over '<timestamp>.<body>'."""
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class BudgetWebhook:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: BudgetWebhookSettings,
        metrics: HearthMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self._secret = resolve_secret(settings.secret, "budgets.webhook.secret")
        parts = urlsplit(settings.url)
        self._where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"  # no credentials
        self._client = httpx.AsyncClient(timeout=settings.timeout, follow_redirects=False)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._db_ok = True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def wake(self) -> None:
        """An event was written: look now rather than at the next poll."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            self._wake.clear()
            try:
                await self.deliver_due()
            except Exception as exc:  # the loop must outlive any one failure
                if self._db_ok:
                    log.warning("budget webhook: outbox unreadable (%s)", type(exc).__name__)
                self._db_ok = False
                continue
            self._db_ok = True

    async def deliver_due(self) -> int:
        """Try every delivery now due; returns how many were delivered."""
        now = utcnow()
        query = (
            select(
                budget_events.c.id,
                budget_events.c.time,
                budget_events.c.payload,
                budget_events.c.attempts,
            )
            .where(
                and_(
                    budget_events.c.next_attempt.is_not(None),
                    budget_events.c.next_attempt <= now,
                    budget_events.c.delivered_at.is_(None),
                )
            )
            .order_by(budget_events.c.id)
            .limit(BATCH)
        )
        async with self.engine.connect() as conn:
            due = (await conn.execute(query)).all()
        delivered = 0
        for row in due:
            if await self._claim(row.id, row.attempts):
                delivered += await self._deliver(row.id, row.time, row.payload, row.attempts + 1)
        return delivered

    async def _claim(self, event_id: int, attempts: int) -> bool:
        """Take this try for this replica: until it ends, the row is not due for anyone else."""
        lease = utcnow() + dt.timedelta(seconds=self.settings.timeout + 30)
        async with self.engine.begin() as conn:
            moved = await conn.execute(
                update(budget_events)
                .where(and_(budget_events.c.id == event_id, budget_events.c.attempts == attempts))
                .values(attempts=attempts + 1, next_attempt=lease)
            )
        return moved.rowcount == 1

    async def _deliver(
        self, event_id: int, created: dt.datetime, payload: str, attempt: int
    ) -> int:
        body = payload.encode()
        error = await self._post(body)
        now = utcnow()
        if error is None:
            values: dict[str, object] = {"delivered_at": now, "next_attempt": None}
            values["last_error"] = None
            self._count("delivered")
        else:
            delay = min(self.settings.backoff_max, self.settings.backoff * 2 ** (attempt - 1))
            retry = now + dt.timedelta(seconds=delay)
            gave_up = (retry - created).total_seconds() > self.settings.give_up_after
            values = {"next_attempt": None if gave_up else retry, "last_error": error[:300]}
            self._count("gave_up" if gave_up else "failed")
            log.warning(
                "budget webhook %s: try %d failed (%s); %s",
                self._where,
                attempt,
                error,
                "giving up" if gave_up else f"trying again in {delay:g} s",
            )
        async with self.engine.begin() as conn:
            await conn.execute(
                update(budget_events).where(budget_events.c.id == event_id).values(**values)
            )
        return 1 if error is None else 0

    async def _post(self, body: bytes) -> str | None:
        """POST one event; None when the receiver took it (2xx), else what went wrong."""
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret.reveal(), timestamp, body),
            EVENT_ID_HEADER: _event_id(body),
        }
        try:
            answer = await self._client.post(self.settings.url, content=body, headers=headers)
        except httpx.HTTPError as exc:  # refused, reset, timed out: the receiver is down
            return type(exc).__name__
        if 200 <= answer.status_code < 300:
            return None
        return f"HTTP {answer.status_code}"

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.budget_webhook_deliveries.labels(outcome).inc()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()


def _event_id(body: bytes) -> str:
    event_id: str = json.loads(body)["id"]
    return event_id
