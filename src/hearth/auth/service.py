"""The key service of a running Hearth: the admin key, the in-memory key cache and its refresh
from the database, spend totals for budgets, rate-limit counters (Redis or in memory), audit
entries, and the check that refuses to expose a keyless server. Requests never wait on the
database: they read the cache (see `Access`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.auth.access import Access, is_loopback, teams_of
from hearth.auth.keys import KeyRecord
from hearth.auth.limits import Counter, MemoryCounter, RedisCounter
from hearth.auth.store import KeyStore
from hearth.config import Settings
from hearth.db.engine import create_engine, migrate
from hearth.errors import DatabaseUnavailable
from hearth.secrets import resolve_secret
from hearth.usage.recorder import UsageRecorder

log = logging.getLogger(__name__)


def counter_for(settings: Settings) -> Counter:
    return RedisCounter(settings.redis_url) if settings.redis_url else MemoryCounter()


class KeyService:
    def __init__(
        self, settings: Settings, engine: AsyncEngine, access: Access, usage: UsageRecorder
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.access = access
        self.usage = usage
        self.store = KeyStore(engine)
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._db_ok = True
        self._refresh_lock = asyncio.Lock()

    @classmethod
    async def start(
        cls, settings: Settings, engine: AsyncEngine, usage: UsageRecorder
    ) -> KeyService:
        """Load the keys and spend totals from the (migrated) database, refuse an exposed
        address without keys, and start refreshing."""
        admin = settings.auth.admin_key
        admin_key = None if admin is None else resolve_secret(admin, "auth.admin_key").reveal()
        access = Access(settings, counter_for(settings), admin_key)
        service = cls(settings, engine, access, usage)
        access.load(await service.store.all())
        await access.spend.refresh(engine, {})
        access.check_exposure(settings.host)
        service._task = asyncio.get_running_loop().create_task(service._loop())
        return service

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.auth.refresh_interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Reload keys and spend totals. The usage counted here since the last refresh is
        written first, so the database's totals hold it and it is not counted twice."""
        async with self._refresh_lock:
            counted = self.access.spend.snapshot()
            try:
                await self.usage.flush()
                records = await self.store.all()
                if self.access.budgets_in_use(records):  # else the totals would go unread
                    await self.access.spend.refresh(self.engine, counted)
                self.access.load(records)
            except Exception as exc:  # the loop must outlive any one failure
                if self._db_ok:
                    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else None
                    log.warning(
                        "database unavailable (%s): serving with the cached keys",
                        type(cause or exc).__name__,
                    )
                self._db_ok = False
                return
            if not self._db_ok:
                log.info("database reachable again; keys are in sync")
            self._db_ok = True

    def reload(self, settings: Settings) -> None:
        """New team limits (SIGHUP, /admin/reload); the database and keys stay as they are."""
        self.access.teams = teams_of(settings)

    def charge(self, key: KeyRecord, tokens: int, cost: float) -> None:
        """Count what a request of `key` used against its (and its team's) budget and tokens
        per minute, from memory, without waiting."""
        subjects = [f"key:{key.id}"] + ([f"team:{key.team}"] if key.team else [])
        self.access.spend.add(subjects, tokens, cost)
        charges = self.access.tpm_charges(key) if tokens else []
        if not charges:
            return
        counter = self.access.counter
        if isinstance(counter, MemoryCounter):  # no waiting: count it now
            for subject, _ in charges:
                counter.add_now(subject, "tokens", tokens)
            return
        self._in_background(self.access.charge(charges, tokens))

    def audit_soon(self, actor: str, action: str, target: str | None) -> None:
        """Write an audit entry in the background (a database outage only logs it)."""

        async def write() -> None:
            try:
                await self.store.audit(actor, action, target)
            except Exception as exc:
                log.warning("audit log unavailable, not recorded: %s %s (%s)", action, target, exc)

        self._in_background(write())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.access.counter.aclose()


async def check_exposure(settings: Settings) -> None:
    """Before binding: raise ConfigError if `settings` would serve a non-loopback address
    without keys (the same rule the server applies at start, checked early for a clean exit)."""
    if settings.no_auth or is_loopback(settings.host) or settings.auth.admin_key:
        return
    engine = create_engine(settings)
    try:
        await migrate(engine)
        count = await KeyStore(engine).count()
    finally:
        await engine.dispose()
    access = Access(settings, MemoryCounter())
    access.keys_exist = count > 0
    access.check_exposure(settings.host)
