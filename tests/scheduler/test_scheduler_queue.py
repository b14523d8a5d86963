"""The scheduler's waiting room, on the fake engine (fast): a request for a model that does not
fit waits for a busy model to be released, then evicts it; past the queue bound it gets 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hearth.deployments.deployment import LocalDeployment
from hearth.engines.supervisor import SupervisorPolicy
from hearth.errors import ServerBusy
from hearth.scheduler.scheduler import Scheduler
from support.fake_launcher import FakeLauncher

POLICY = SupervisorPolicy(startup_timeout=30, shutdown_grace=2, health_interval=5)


def deployment(name: str, memory: int) -> LocalDeployment:
    return LocalDeployment(name, FakeLauncher(), keep_alive=-1, memory_bytes=memory)


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    scheduler = Scheduler(POLICY, tmp_path, memory_budget=100, queue_size=1)
    scheduler.start()
    yield scheduler
    await scheduler.aclose()


async def test_a_waiting_request_loads_once_the_busy_model_is_released(
    scheduler: Scheduler,
) -> None:
    a, b, c = deployment("a", 60), deployment("b", 60), deployment("c", 60)
    release_a = asyncio.Event()

    async def hold_a() -> None:
        async with scheduler.use(a) as supervisor:
            await supervisor.endpoint()
            await release_a.wait()

    holder = asyncio.create_task(hold_a())
    while scheduler.get("a") is None or scheduler.get("a").in_flight == 0:  # type: ignore[union-attr]
        await asyncio.sleep(0.01)

    async def use_b() -> str:
        async with scheduler.use(b) as supervisor:
            return await supervisor.endpoint()

    waiter = asyncio.create_task(use_b())
    while scheduler.waiting == 0:
        await asyncio.sleep(0.01)
    assert not waiter.done()

    # The queue holds one: a third request is turned away at once, with Retry-After.
    with pytest.raises(ServerBusy) as busy:
        async with scheduler.use(c):
            pass
    assert busy.value.headers == {"retry-after": "5"}

    release_a.set()
    await holder
    url = await asyncio.wait_for(waiter, 30)
    assert url.startswith("http://127.0.0.1:")
    assert [m.deployment.name for m in scheduler.loaded()] == ["b"]
    assert scheduler.memory_in_use() == 60


async def test_least_recently_used_idle_model_is_evicted_first(tmp_path: Path) -> None:
    scheduler = Scheduler(POLICY, tmp_path, memory_budget=100, queue_size=0)
    scheduler.start()
    try:
        a, b, c = deployment("a", 40), deployment("b", 40), deployment("c", 40)
        for model in (a, b):
            async with scheduler.use(model) as supervisor:
                await supervisor.endpoint()
        async with scheduler.use(a) as supervisor:  # a is now the most recently used
            await supervisor.endpoint()
        async with scheduler.use(c) as supervisor:
            await supervisor.endpoint()
        assert sorted(m.deployment.name for m in scheduler.loaded()) == ["a", "c"]
    finally:
        await scheduler.aclose()
