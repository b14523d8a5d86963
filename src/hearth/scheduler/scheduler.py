"""Loads local models on demand, within a memory budget, and unloads them when idle.

A model is loaded by the first request that needs it; requests that arrive while it loads wait
for the same load. Each request holds the model while it runs, so an in-use model is never
unloaded. When the last request finishes, the model's keep_alive starts: 0 unloads it at once, a
negative value keeps it loaded, anything else unloads it after that many idle seconds.

Loading a model that does not fit in the budget evicts idle models, least recently used first.
When every loaded model is busy, the request waits (at most `queue_size` of them) until one is
released; past that it gets 503 with Retry-After. A model larger than the whole budget is refused
with a 400 that says how much it needs.

A model may run as several replicas (engine processes), each counted against the budget; a
request goes to one of them (see `affinity`). An autoscaled model starts another replica when
every one is busy and the budget has room without evicting anything, and stops an extra one after
it has been idle for its replica idle time.

A model whose engine must change while requests use it (a settings reload, or its file after
`hearth pull --update` or `hearth rollback`) is drained: new requests start the new engine, the
requests in flight finish on the old one (for at most `drain_timeout` seconds), then it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import LocalDeployment
from hearth.engines.placement import PinnedLauncher
from hearth.engines.supervisor import EngineSupervisor, SupervisorPolicy
from hearth.errors import EngineNotInstalled, ModelTooLarge, ServerBusy
from hearth.scheduler.loaded import Lease, LoadedModel, Replica, replica_name
from hearth.scheduler.slots import RequestSlots

log = logging.getLogger(__name__)

__all__ = ["Lease", "LoadedModel", "Scheduler"]


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
        drain_timeout: float = 600.0,
    ):
        self.policy = policy
        self.logs_dir = logs_dir
        self.memory_budget = memory_budget
        self.queue_size = queue_size
        self.request_queue_size = request_queue_size
        self.request_queue_timeout = request_queue_timeout
        self.reap_interval = reap_interval
        self.on_model_ready = on_model_ready
        self.drain_timeout = drain_timeout
        self.waiting = 0
        self._room = asyncio.Condition()
        self._loaded: dict[str, LoadedModel] = {}
        self._draining: list[LoadedModel] = []  # replaced, finishing their requests
        self._closing = False
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
            loaded = LoadedModel(
                deployment,
                {},
                keep_alive=deployment.keep_alive if keep_alive is None else keep_alive,
                loaded_at=now,
                last_used=now,
            )
            self._loaded[deployment.name] = loaded
            log.info("loading model %s", deployment.name)
            for index in range(deployment.replicas.min):
                self._start_replica(loaded, index)
        elif keep_alive is not None:
            loaded.keep_alive = keep_alive
        return loaded

    def _start_replica(self, loaded: LoadedModel, index: int) -> Replica:
        deployment, now = loaded.deployment, time.monotonic()
        name = replica_name(deployment.name, index)
        launcher = deployment.replica_launcher(index)
        supervisor = EngineSupervisor(
            name,
            launcher,
            log_path=self.logs_dir / f"{name.replace('/', '--')}.log",
            policy=self.policy,
            on_ready=self._ready_callback(deployment.name),
        )
        slots = RequestSlots(
            name, deployment.slots, self.request_queue_size, self.request_queue_timeout
        )
        where = launcher.placement.describe() if isinstance(launcher, PinnedLauncher) else "shared"
        replica = Replica(index, supervisor, slots, where, started_at=now, last_used=now)
        loaded.replicas[index] = replica
        if index:
            log.info("starting replica %s (%s)", name, where)
        supervisor.start()
        return replica

    def memory_in_use(self) -> int:
        return sum(m.memory_bytes for m in (*self._loaded.values(), *self._draining))

    async def make_room_and_load(self, deployment: LocalDeployment) -> LoadedModel:
        """Load a model once it fits: evict idle models (LRU) or wait for busy ones to finish."""
        loaded = self._loaded.get(deployment.name)
        if loaded is not None:
            return loaded
        if deployment.unavailable is not None:
            raise EngineNotInstalled(deployment.unavailable)  # starting it could only fail
        count = deployment.replicas.min
        budget, need = self.memory_budget, deployment.memory_bytes * count
        if budget is not None and need > budget:
            replicas = f" ({count} replicas)" if count > 1 else ""
            raise ModelTooLarge(
                f"The model '{deployment.name}' needs about {_gib(need)} of memory{replicas} but "
                f"the budget is {_gib(budget)}; raise memory_budget or lower its "
                f"ctx_size/parallel{'/replicas' if replicas else ''}.",
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
        async with self.hold(deployment, keep_alive, priority) as lease:
            yield lease.supervisor

    @contextlib.asynccontextmanager
    async def hold(
        self,
        deployment: LocalDeployment,
        keep_alive: float | None = None,
        priority: int = 0,
        prefix: Sequence[bytes] = (),
    ) -> AsyncIterator[Lease]:
        """`use`, on the replica chosen for a prompt with this prefix fingerprint (see
        `affinity`); the lease says which replica and why."""
        loaded = await self.make_room_and_load(deployment)
        replica, choice = loaded.choose(prefix)
        if loaded.wants_another() and self._room_for(deployment.memory_bytes):
            index = next(i for i in range(len(loaded.replicas) + 1) if i not in loaded.replicas)
            self._start_replica(loaded, index)
        lease = Lease(replica, choice)
        try:
            async with replica.slots.hold(priority):
                yield lease
        finally:
            lease.release()
            replica.last_used = loaded.last_used = time.monotonic()
            if keep_alive is not None:
                loaded.keep_alive = keep_alive
            if loaded.in_flight == 0:
                if loaded.keep_alive == 0:
                    self._unload_soon(loaded)
                # In the background: an eviction may hold the lock while an engine stops.
                self._in_background(self._wake_waiters())

    def _room_for(self, need: int) -> bool:
        """Room in the budget without evicting anything (for another replica)."""
        return self.memory_budget is None or self.memory_in_use() + need <= self.memory_budget

    async def _wake_waiters(self) -> None:
        async with self._room:
            self._room.notify_all()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def adopt(self, catalogue: Catalogue) -> dict[str, str]:
        """Switch loaded models to a new catalogue (after a settings reload). A model whose engine
        command line or replicas changed is reloaded, once; one that is gone is unloaded; any other
        change (keep_alive, aliases, request defaults, replica_routing) applies without touching
        the engines. A reloaded model's requests in flight finish on its old engine (drained),
        while new ones go to the new engine: started at once when memory allows, else by the
        first request once the old one has stopped."""
        changes: dict[str, str] = {}
        for name, loaded in list(self._loaded.items()):
            new = catalogue.get(name)
            if new is None:
                await self.unload(name)
                changes[name] = "unloaded"
            elif _engine_setup(new) == _engine_setup(loaded.deployment):
                loaded.deployment = new
                changes[name] = "kept"
            else:
                await self._replace(loaded)
                if self._room_for(new.memory_bytes * new.replicas.min):
                    self.load(new, keep_alive=loaded.keep_alive)
                changes[name] = "reloaded"
        return changes

    async def _replace(self, loaded: LoadedModel) -> None:
        """Take a model out of service: stopped now when idle, else drained in the background."""
        name = loaded.deployment.name
        self._loaded.pop(name, None)
        if loaded.in_flight == 0:
            log.info("unloading model %s to reload it", name)
            await asyncio.gather(*(r.supervisor.stop() for r in loaded.replicas.values()))
            if not self._room.locked():
                await self._wake_waiters()
            return
        log.info("draining model %s: %d requests finish on its old engine", name, loaded.in_flight)
        self._draining.append(loaded)
        self._in_background(self._drain(loaded))

    async def _drain(self, loaded: LoadedModel) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while loaded.in_flight and not self._closing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if loaded.in_flight:
            log.warning(
                "model %s still had %d requests after draining; stopping its old engine",
                loaded.deployment.name,
                loaded.in_flight,
            )
        try:
            await asyncio.gather(*(r.supervisor.stop() for r in loaded.replicas.values()))
        finally:
            self._draining.remove(loaded)
        log.info("old engine of model %s stopped", loaded.deployment.name)
        await self._wake_waiters()

    def _ready_callback(self, name: str) -> Callable[[float], None] | None:
        callback = self.on_model_ready
        if callback is None:
            return None
        return lambda seconds: callback(name, seconds)

    def get(self, name: str) -> LoadedModel | None:
        return self._loaded.get(name)

    def loaded(self) -> list[LoadedModel]:
        return [self._loaded[name] for name in sorted(self._loaded)]

    def draining(self) -> list[LoadedModel]:
        """Replaced models whose old engines are finishing their requests (see `_replace`)."""
        return list(self._draining)

    async def unload(self, name: str) -> bool:
        """Stop a model's engine now, even if requests are using it (they get an error)."""
        loaded = self._loaded.pop(name, None)
        if loaded is None:
            return False
        log.info("unloading model %s", name)
        await asyncio.gather(*(r.supervisor.stop() for r in loaded.replicas.values()))
        if not self._room.locked():  # eviction holds it and goes on by itself
            await self._wake_waiters()
        return True

    async def aclose(self) -> None:
        self._closing = True  # drains end now: their engines stop with the others
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
                    continue
                for replica in loaded.idle_extras(now):
                    self._in_background(self._stop_replica(loaded, replica))

    async def _stop_replica(self, loaded: LoadedModel, replica: Replica) -> None:
        """Autoscaling down: an extra replica idle past its time stops; memory frees for others."""
        if loaded.replicas.get(replica.index) is not replica or replica.in_flight:
            return
        del loaded.replicas[replica.index]
        loaded.prefixes.forget(replica.index)
        idle = time.monotonic() - replica.last_used
        log.info("replica %s idle for %.0fs; stopping it", replica.name, idle)
        await replica.supervisor.stop()
        await self._wake_waiters()


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


def _engine_setup(deployment: LocalDeployment) -> list[Any]:
    """What decides whether a settings change needs a reload: each replica's engine command line
    (port aside), environment and cores, and how many replicas may run."""
    replicas = deployment.replicas
    commands = [deployment.replica_launcher(i).command("127.0.0.1", 0) for i in range(replicas.max)]
    return [replicas.min, replicas.max, *((c.argv, c.env, c.cpus) for c in commands)]
