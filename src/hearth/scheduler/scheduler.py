"""Loads local models on demand, within a memory budget, and unloads them when idle.

A model is loaded by the first request that needs it; requests that arrive while it loads wait
for the same load. Each request holds the model while it runs, so an in-use model is never
unloaded. When the last request finishes, the model's keep_alive starts: 0 unloads it at once, a
negative value keeps it loaded, anything else unloads it after that many idle seconds.

Loading a model that does not fit in the budget evicts idle models, least recently used first.
When every loaded model is busy, the request waits (at most `queue_size` of them) until one is
released; past that it gets 503 with Retry-After. A model larger than the whole budget is refused
with a 400 that says how much it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import LocalDeployment
from hearth.engines.supervisor import EngineSupervisor, SupervisorPolicy
from hearth.errors import EngineNotInstalled, ModelTooLarge, ServerBusy
from hearth.scheduler.slots import RequestSlots

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    deployment: LocalDeployment
    supervisor: EngineSupervisor
    slots: RequestSlots
    keep_alive: float
    loaded_at: float
    last_used: float
    in_flight: int = 0  # requests holding the model: decoding or queued for a slot

    def expires_at(self) -> float | None:
        """Monotonic time of the idle unload, or None while in use or kept forever."""
        if self.in_flight or self.keep_alive < 0:
            return None
        return self.last_used + self.keep_alive

    def describe(self, now: float) -> dict[str, Any]:
        expires = self.expires_at()
        return {
            "name": self.deployment.name,
            "state": self.supervisor.state.value,
            "pid": self.supervisor.process.pid if self.supervisor.process else None,
            "in_flight": self.in_flight,
            "slots": self.slots.slots,
            "slots_busy": self.slots.busy,
            "queued": self.slots.queued,
            "loaded_for_s": round(now - self.loaded_at, 1),
            "idle_for_s": None if self.in_flight else round(now - self.last_used, 1),
            "keep_alive_s": self.keep_alive,
            "expires_in_s": None if expires is None else round(max(0.0, expires - now), 1),
            "restarts": self.supervisor.restarts,
            "last_error": self.supervisor.last_error,
        }


class Scheduler:
    def __init__(
        self,
        policy: SupervisorPolicy,
        logs_dir: Path,
        memory_budget: int | None = None,
        queue_size: int = 32,
        request_queue_size: int = 64,
        request_queue_timeout: float | None = None,
        reap_interval: float = 0.5,
        on_model_ready: Callable[[str, float], None] | None = None,
    ):
        self.policy = policy
        self.logs_dir = logs_dir
        self.memory_budget = memory_budget
        self.queue_size = queue_size
        self.request_queue_size = request_queue_size
        self.request_queue_timeout = request_queue_timeout
        self.reap_interval = reap_interval
        self.on_model_ready = on_model_ready
        self.waiting = 0
        self._room = asyncio.Condition()
        self._loaded: dict[str, LoadedModel] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap(), name="scheduler:reaper")

    def load(self, deployment: LocalDeployment, keep_alive: float | None = None) -> LoadedModel:
        """Start loading a model (or return it if loaded); does not wait for it to be ready."""
        loaded = self._loaded.get(deployment.name)
        if loaded is None:
            now = time.monotonic()
            supervisor = EngineSupervisor(
                deployment.name,
                deployment.launcher,
                log_path=self.logs_dir / f"{deployment.name.replace('/', '--')}.log",
                policy=self.policy,
                on_ready=self._ready_callback(deployment.name),
            )
            loaded = LoadedModel(
                deployment,
                supervisor,
                RequestSlots(
                    deployment.name,
                    deployment.slots,
                    self.request_queue_size,
                    self.request_queue_timeout,
                ),
                keep_alive=deployment.keep_alive if keep_alive is None else keep_alive,
                loaded_at=now,
                last_used=now,
            )
            self._loaded[deployment.name] = loaded
            log.info("loading model %s", deployment.name)
            supervisor.start()
        elif keep_alive is not None:
            loaded.keep_alive = keep_alive
        return loaded

    def memory_in_use(self) -> int:
        return sum(m.deployment.memory_bytes for m in self._loaded.values())

    async def make_room_and_load(self, deployment: LocalDeployment) -> LoadedModel:
        """Load a model once it fits: evict idle models (LRU) or wait for busy ones to finish."""
        loaded = self._loaded.get(deployment.name)
        if loaded is not None:
            return loaded
        if deployment.unavailable is not None:
            raise EngineNotInstalled(deployment.unavailable)  # starting it could only fail
        budget, need = self.memory_budget, deployment.memory_bytes
        if budget is not None and need > budget:
            raise ModelTooLarge(
                f"The model '{deployment.name}' needs about {_gib(need)} of memory but the budget "
                f"is {_gib(budget)}; raise memory_budget or lower its ctx_size/parallel.",
                param="model",
            )
        async with self._room:
            while True:
                loaded = self._loaded.get(deployment.name)
                if loaded is not None:
                    return loaded  # someone else loaded it while we waited
                if budget is None or self.memory_in_use() + need <= budget:
                    return self.load(deployment)
                idle = [m for m in self._loaded.values() if m.in_flight == 0]
                if idle:
                    victim = min(idle, key=lambda m: m.last_used)
                    log.info(
                        "evicting idle model %s to load %s", victim.deployment.name, deployment.name
                    )
                    await self.unload(victim.deployment.name)
                    continue
                if self.waiting >= self.queue_size:
                    raise ServerBusy(
                        f"No memory to load '{deployment.name}' while the loaded models are busy, "
                        f"and {self.waiting} requests are already waiting; retry shortly.",
                        retry_after=5,
                    )
                self.waiting += 1
                try:
                    await asyncio.wait_for(self._room.wait(), self.policy.startup_timeout)
                except TimeoutError:
                    raise ServerBusy(
                        f"Waited {self.policy.startup_timeout:.0f}s for memory to load "
                        f"'{deployment.name}'; retry shortly.",
                        retry_after=5,
                    ) from None
                finally:
                    self.waiting -= 1

    @contextlib.asynccontextmanager
    async def use(
        self, deployment: LocalDeployment, keep_alive: float | None = None, priority: int = 0
    ) -> AsyncIterator[EngineSupervisor]:
        """Hold a model for one request: loaded on demand, never unloaded while held, and one of
        its slots (waiting for one, by priority, when all are busy)."""
        loaded = await self.make_room_and_load(deployment)
        loaded.in_flight += 1
        try:
            async with loaded.slots.hold(priority):
                yield loaded.supervisor
        finally:
            loaded.in_flight -= 1
            loaded.last_used = time.monotonic()
            if keep_alive is not None:
                loaded.keep_alive = keep_alive
            if loaded.in_flight == 0:
                if loaded.keep_alive == 0:
                    self._unload_soon(loaded)
                # In the background: an eviction may hold the lock while an engine stops.
                self._in_background(self._wake_waiters())

    async def _wake_waiters(self) -> None:
        async with self._room:
            self._room.notify_all()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def adopt(self, catalogue: Catalogue) -> dict[str, str]:
        """Switch loaded models to a new catalogue (after a settings reload). A model whose engine
        command line changed is reloaded, once; one that is gone is unloaded; any other change
        (keep_alive, aliases, request defaults) applies without touching the engine."""
        changes: dict[str, str] = {}
        for name, loaded in list(self._loaded.items()):
            new = catalogue.get(name)
            if new is None:
                await self.unload(name)
                changes[name] = "unloaded"
            elif _engine_argv(new) == _engine_argv(loaded.deployment):
                loaded.deployment = new
                changes[name] = "kept"
            else:
                await self.unload(name)
                self.load(new, keep_alive=loaded.keep_alive)
                changes[name] = "reloaded"
        return changes

    def _ready_callback(self, name: str) -> Callable[[float], None] | None:
        callback = self.on_model_ready
        if callback is None:
            return None
        return lambda seconds: callback(name, seconds)

    def get(self, name: str) -> LoadedModel | None:
        return self._loaded.get(name)

    def loaded(self) -> list[LoadedModel]:
        return [self._loaded[name] for name in sorted(self._loaded)]

    async def unload(self, name: str) -> bool:
        """Stop a model's engine now, even if requests are using it (they get an error)."""
        loaded = self._loaded.pop(name, None)
        if loaded is None:
            return False
        log.info("unloading model %s", name)
        await loaded.supervisor.stop()
        if not self._room.locked():  # eviction holds it and goes on by itself
            await self._wake_waiters()
        return True

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self.unload(name) for name in list(self._loaded)))
        await asyncio.gather(*self._background, return_exceptions=True)

    def _unload_soon(self, loaded: LoadedModel) -> None:
        async def unload_if_still_idle() -> None:
            if self._loaded.get(loaded.deployment.name) is loaded and loaded.in_flight == 0:
                await self.unload(loaded.deployment.name)

        self._in_background(unload_if_still_idle())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            now = time.monotonic()
            for loaded in list(self._loaded.values()):
                expires = loaded.expires_at()
                if expires is not None and now >= expires:
                    log.info(
                        "model %s idle for %.0fs (keep_alive); unloading",
                        loaded.deployment.name,
                        now - loaded.last_used,
                    )
                    self._unload_soon(loaded)


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


def _engine_argv(deployment: LocalDeployment) -> list[str]:
    """The engine command line, port aside: what decides whether a change needs a reload."""
    return deployment.launcher.command("127.0.0.1", 0).argv
