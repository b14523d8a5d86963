"""Loads local models on demand and unloads them when idle (keep_alive).

A model is loaded by the first request that needs it; requests that arrive while it loads wait
for the same load. Each request holds the model while it runs, so an in-use model is never
unloaded. When the last request finishes, the model's keep_alive starts: 0 unloads it at once, a
negative value keeps it loaded, anything else unloads it after that many idle seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth.engines.supervisor import EngineSupervisor, SupervisorPolicy
from hearth.routing.catalogue import LocalDeployment

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    deployment: LocalDeployment
    supervisor: EngineSupervisor
    keep_alive: float
    loaded_at: float
    last_used: float
    in_flight: int = 0

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
            "loaded_for_s": round(now - self.loaded_at, 1),
            "idle_for_s": None if self.in_flight else round(now - self.last_used, 1),
            "keep_alive_s": self.keep_alive,
            "expires_in_s": None if expires is None else round(max(0.0, expires - now), 1),
            "restarts": self.supervisor.restarts,
            "last_error": self.supervisor.last_error,
        }


class Scheduler:
    def __init__(self, policy: SupervisorPolicy, logs_dir: Path, reap_interval: float = 0.5):
        self.policy = policy
        self.logs_dir = logs_dir
        self.reap_interval = reap_interval
        self._loaded: dict[str, LoadedModel] = {}
        self._unloading: set[asyncio.Task[None]] = set()
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
            )
            loaded = LoadedModel(
                deployment,
                supervisor,
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

    @contextlib.asynccontextmanager
    async def use(
        self, deployment: LocalDeployment, keep_alive: float | None = None
    ) -> AsyncIterator[EngineSupervisor]:
        """Hold a model for one request: loaded on demand, never unloaded while held."""
        loaded = self.load(deployment)
        loaded.in_flight += 1
        try:
            yield loaded.supervisor
        finally:
            loaded.in_flight -= 1
            loaded.last_used = time.monotonic()
            if keep_alive is not None:
                loaded.keep_alive = keep_alive
            if loaded.in_flight == 0 and loaded.keep_alive == 0:
                self._unload_soon(loaded)

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
        return True

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self.unload(name) for name in list(self._loaded)))
        await asyncio.gather(*self._unloading, return_exceptions=True)

    def _unload_soon(self, loaded: LoadedModel) -> None:
        async def unload_if_still_idle() -> None:
            if self._loaded.get(loaded.deployment.name) is loaded and loaded.in_flight == 0:
                await self.unload(loaded.deployment.name)

        task = asyncio.create_task(unload_if_still_idle())
        self._unloading.add(task)
        task.add_done_callback(self._unloading.discard)

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
