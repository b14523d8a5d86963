"""The access-and-accounting service of a running Hearth: the database, the key cache and its
refresh, the usage writer, roll-ups and retention. One background loop does all the database
work, so requests never wait on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.auth.access import Access, is_loopback, teams_of
from hearth.auth.keys import KeyRecord
from hearth.auth.limits import Counter, MemoryCounter, RedisCounter
from hearth.auth.store import KeyStore
from hearth.config import Price, Settings
from hearth.db.engine import create_engine, migrate, utcnow
from hearth.routing.remote import resolve_secret
from hearth.usage.rollup import prune, roll_up
from hearth.usage.writer import UsageWriter

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 300.0  # seconds between roll-ups and pruning


def counter_for(settings: Settings) -> Counter:
    return RedisCounter(settings.redis_url) if settings.redis_url else MemoryCounter()


class Accounting:
    def __init__(self, settings: Settings, engine: AsyncEngine, access: Access) -> None:
        self.settings = settings
        self.engine = engine
        self.access = access
        self.store = KeyStore(engine)
        self.writer = UsageWriter(engine)
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._db_ok = True
        self._last_refresh = time.monotonic()
        self._last_housekeeping = 0.0
        self._sync_lock = asyncio.Lock()

    @classmethod
    async def start(cls, settings: Settings) -> Accounting:
        """Open (and migrate) the database, load the keys, and check the listening address."""
        admin = settings.auth.admin_key
        admin_key = None if admin is None else resolve_secret(admin, "auth.admin_key").reveal()
        engine = create_engine(settings)
        await migrate(engine)
        access = Access(settings, counter_for(settings), admin_key)
        accounting = cls(settings, engine, access)
        access.load(await accounting.store.all())
        await access.spend.refresh(engine, {})
        access.check_exposure(settings.host)
        accounting._task = asyncio.create_task(accounting._loop())
        return accounting

    async def _loop(self) -> None:
        tick = min(self.settings.usage.flush_interval, self.settings.auth.refresh_interval)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.sync()
            except Exception:  # the loop must outlive any one failure
                log.exception("accounting loop failed; trying again")

    async def sync(self, force: bool = False) -> None:
        """Write buffered usage; every refresh_interval reload keys and spend totals."""
        async with self._sync_lock:
            await self._sync(force)

    async def _sync(self, force: bool) -> None:
        refresh = force or (
            time.monotonic() - self._last_refresh >= self.settings.auth.refresh_interval
        )
        counted = self.access.spend.snapshot()
        try:
            await self.writer.flush()
            if refresh:
                self._last_refresh = time.monotonic()
                records = await self.store.all()
                if self.access.budgets_in_use(records):  # else the totals would go unread
                    await self.access.spend.refresh(self.engine, counted)
                self.access.load(records)
            if time.monotonic() - self._last_housekeeping >= HOUSEKEEPING_INTERVAL:
                self._last_housekeeping = time.monotonic()
                await self.housekeeping()
        except Exception as exc:
            if self._db_ok:
                log.warning(
                    "database unavailable (%s: %s): serving with the cached keys, %d usage rows "
                    "buffered",
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "",
                    self.writer.pending,
                )
            self._db_ok = False
            return
        if not self._db_ok:
            log.info("database reachable again; keys and usage are in sync")
        self._db_ok = True

    def reload(self, settings: Settings) -> None:
        """New team limits (SIGHUP, /admin/reload); the database and keys stay as they are."""
        self.access.teams = teams_of(settings)

    async def housekeeping(self) -> None:
        now = utcnow()
        hours = await roll_up(self.engine, now)
        pruned = await prune(self.engine, now, self.settings.usage.retention_days)
        if hours or pruned:
            log.info("usage: %d hours rolled up, %d old rows pruned", hours, pruned)

    def record(
        self,
        state: Any,
        model: str,
        trace: Any,
        status: int,
        price: Price | None,
    ) -> None:
        """One usage row for a request that reached the router (from memory, no waiting)."""
        key: KeyRecord | None = getattr(state, "key", None)
        usage = trace.usage or {}
        prompt = _tokens(usage.get("prompt_tokens"))
        completion = _tokens(usage.get("completion_tokens"))
        cached = trace.cache == "hit"
        cost = 0.0 if cached or price is None else price.of(prompt, completion)
        self.writer.record(
            {
                "time": time.time(),
                "request_id": state.request_id,
                "key_id": None if key is None else key.id,
                "team": None if key is None else key.team,
                "model": model,
                "deployment": trace.deployment,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cached": cached,
                "status": status,
                "latency_ms": (time.perf_counter() - trace.started) * 1000,
                "ttft_ms": None if trace.ttft is None else trace.ttft * 1000,
                "cost": cost,
            }
        )
        if key is None or cached:
            return
        subjects = [f"key:{key.id}"] + ([f"team:{key.team}"] if key.team else [])
        self.access.spend.add(subjects, prompt + completion, cost)
        charges = self.access.tpm_charges(key) if prompt + completion else []
        if not charges:
            return
        counter = self.access.counter
        if isinstance(counter, MemoryCounter):  # no waiting: count it now
            for subject, _ in charges:
                counter.add_now(subject, "tokens", prompt + completion)
            return
        task = asyncio.get_running_loop().create_task(
            self.access.charge(charges, prompt + completion)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def audit_soon(self, actor: str, action: str, target: str | None) -> None:
        """Write an audit entry in the background (a database outage only logs it)."""

        async def write() -> None:
            try:
                await self.store.audit(actor, action, target)
            except Exception as exc:
                log.warning("audit log unavailable, not recorded: %s %s (%s)", action, target, exc)

        task = asyncio.get_running_loop().create_task(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Stop the loop and write every buffered row (a graceful shutdown loses none)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        try:
            written = await self.writer.flush()
            if written:
                log.info("usage: %d rows written at shutdown", written)
        except Exception as exc:
            log.error(
                "usage: %d rows could not be written at shutdown: %s", self.writer.pending, exc
            )
        await self.access.counter.aclose()
        await self.engine.dispose()


def _tokens(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


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
