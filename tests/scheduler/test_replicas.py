"""A model's replicas in the scheduler, on the fake engine (fast, real processes): started and
stopped together, counted against the budget and evicted as one, pinned to their own cores,
chosen by prompt prefix, and autoscaled up while requests queue and down when idle."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hearth.deployments.deployment import LocalDeployment, Replicas
from hearth.engines.placement import PinnedLauncher, Placement
from hearth.engines.supervisor import SupervisorPolicy
from hearth.errors import ModelTooLarge
from hearth.scheduler.scheduler import Lease, Scheduler
from support.fake_launcher import FakeLauncher

POLICY = SupervisorPolicy(startup_timeout=30, shutdown_grace=2, health_interval=5)
DOC = (b"d1", b"d2", b"d3")


def model(
    name: str,
    memory: int = 10,
    low: int = 2,
    high: int | None = None,
    slots: int = 2,
    idle: float = 300.0,
    cpus: list[frozenset[int]] | None = None,
) -> LocalDeployment:
    high = high or low
    launchers = tuple(
        PinnedLauncher(FakeLauncher(), Placement(cpus=cpus[i] if cpus else None))
        for i in range(high)
    )
    replicas = Replicas(low, high, "affinity", idle, launchers)
    return LocalDeployment(
        name, FakeLauncher(), keep_alive=-1, memory_bytes=memory, slots=slots, replicas=replicas
    )


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    scheduler = Scheduler(POLICY, tmp_path, memory_budget=100, queue_size=0, reap_interval=0.05)
    scheduler.start()
    yield scheduler
    await scheduler.aclose()


async def ready(scheduler: Scheduler, name: str) -> None:
    loaded = scheduler.get(name)
    assert loaded is not None
    await asyncio.gather(*(r.supervisor.endpoint() for r in loaded.replicas.values()))


async def until(check: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_replicas_load_count_and_unload_as_one_model(scheduler: Scheduler) -> None:
    a = model("a", memory=40)
    scheduler.load(a)
    await ready(scheduler, "a")
    loaded = scheduler.get("a")
    assert loaded is not None
    described = loaded.describe(0.0)
    assert [r["name"] for r in described["replicas"]] == ["a", "a#1"]
    assert all(r["state"] == "ready" for r in described["replicas"])
    pids = [r["pid"] for r in described["replicas"]]
    assert len(set(pids)) == 2 and described["slots"] == 4
    assert scheduler.memory_in_use() == 80  # each replica counts

    # Another model does not fit beside both replicas: the idle group is evicted, all of it.
    b = LocalDeployment("b", FakeLauncher(), keep_alive=-1, memory_bytes=40)
    async with scheduler.use(b) as supervisor:
        await supervisor.endpoint()
    assert [m.deployment.name for m in scheduler.loaded()] == ["b"]
    for pid in pids:
        await until(lambda pid=pid: not Path(f"/proc/{pid}").exists() or _zombie(pid))

    # Three replicas of 40 can never fit in 100, though one would.
    with pytest.raises(ModelTooLarge, match=r"\(3 replicas\)"):
        async with scheduler.use(model("c", memory=40, low=3)):
            pass


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to split")
async def test_replicas_run_on_their_own_cores(scheduler: Scheduler) -> None:
    first, second = sorted(os.sched_getaffinity(0))[:2]
    scheduler.load(model("a", cpus=[frozenset({first}), frozenset({second})]))
    await ready(scheduler, "a")
    loaded = scheduler.get("a")
    assert loaded is not None
    pids = [r.supervisor.process.pid for r in loaded.replicas.values()]  # type: ignore[union-attr]
    assert [os.sched_getaffinity(pid) for pid in pids] == [{first}, {second}]
    assert [r["placement"] for r in loaded.describe(0.0)["replicas"]] == [
        f"cpus {first}",
        f"cpus {second}",
    ]


async def test_a_conversation_stays_on_its_replica_unless_that_one_is_busy(
    scheduler: Scheduler,
) -> None:
    a = model("a", slots=1)
    scheduler.load(a)
    await ready(scheduler, "a")

    async def ask(prefix: tuple[bytes, ...]) -> Lease:
        async with scheduler.hold(a, prefix=prefix) as lease:
            return lease

    one, two = await ask(DOC), await ask((b"e1", b"e2"))
    assert {one.replica, two.replica} == {"a", "a#1"}  # nothing in common: shared out
    assert (one.reason, two.reason) == ("least_busy", "least_busy")
    follow_up = await ask((*DOC, b"turn2"))
    assert (follow_up.replica, follow_up.reason, follow_up.matched) == (one.replica, "prefix", 3)

    # While a request holds its only slot, the same conversation goes to the free replica.
    async with scheduler.hold(a, prefix=DOC) as held:
        moved = await ask((*DOC, b"turn3"))
    assert held.replica == one.replica
    assert (moved.replica, moved.reason) == (two.replica, "busy")


async def test_a_request_weighs_on_its_replica_until_its_prompt_is_evaluated(
    scheduler: Scheduler,
) -> None:
    a = model("a", slots=4)
    scheduler.load(a)
    await ready(scheduler, "a")
    loaded = scheduler.get("a")
    assert loaded is not None
    async with scheduler.hold(a, prefix=DOC) as lease:
        replica = loaded.replicas[0 if lease.replica == "a" else 1]
        assert replica.backlog == len(DOC) + 1  # nothing held: all of it to evaluate
        lease.prompt_evaluated()
        assert replica.backlog == 1
        # Its replica, busy only generating now, holds the prefix: the same prompt goes there
        # rather than being evaluated again on the idle one.
        async with scheduler.hold(a, prefix=DOC) as again:
            assert (again.replica, again.reason) == (lease.replica, "prefix")
            assert replica.backlog == 2
    assert [r.backlog for r in loaded.replicas.values()] == [0, 0]


async def test_autoscaling_adds_a_replica_while_requests_queue_and_stops_it_when_idle(
    scheduler: Scheduler,
) -> None:
    a = model("a", memory=40, low=1, high=2, slots=1, idle=0.5)
    release, leases = asyncio.Event(), []

    async def hold() -> None:
        async with scheduler.hold(a) as lease:
            leases.append(lease)
            await release.wait()

    tasks = [asyncio.create_task(hold())]
    await until(lambda: len(leases) == 1)
    await leases[0].supervisor.endpoint()
    loaded = scheduler.get("a")
    assert loaded is not None and list(loaded.replicas) == [0]
    assert scheduler.memory_in_use() == 40

    # The only slot is taken: the next request queues, and a second replica starts.
    tasks.append(asyncio.create_task(hold()))
    await until(lambda: len(loaded.replicas) == 2)
    assert scheduler.memory_in_use() == 80
    await ready(scheduler, "a")
    assert len(leases) == 1  # the queued one waits for the slot it queued for
    tasks.append(asyncio.create_task(hold()))
    await until(lambda: len(leases) == 2)
    assert leases[1].replica == "a#1"  # the next one goes to the new replica

    # Both busy, at max_replicas: no third replica.
    tasks.append(asyncio.create_task(hold()))
    await asyncio.sleep(0.2)
    assert len(loaded.replicas) == 2
    release.set()
    await asyncio.gather(*tasks)

    extra = loaded.replicas[1].supervisor.process
    assert extra is not None
    await until(lambda: list(loaded.replicas) == [0])  # idle past 0.5 s: stopped
    await until(lambda: extra.returncode is not None)
    assert scheduler.memory_in_use() == 40
    assert scheduler.get("a") is loaded  # the model itself stays (keep_alive -1)


async def test_no_replica_is_added_beyond_the_budget(tmp_path: Path) -> None:
    scheduler = Scheduler(POLICY, tmp_path, memory_budget=60, reap_interval=0.05)
    scheduler.start()
    try:
        a = model("a", memory=40, low=1, high=2, slots=1)
        async with scheduler.hold(a) as first:
            await first.supervisor.endpoint()
            waiter = asyncio.create_task(_hold_once(scheduler, a))
            await asyncio.sleep(0.3)
            loaded = scheduler.get("a")
            assert loaded is not None and list(loaded.replicas) == [0]
        assert (await waiter).replica == "a"
    finally:
        await scheduler.aclose()


async def _hold_once(scheduler: Scheduler, deployment: LocalDeployment) -> Lease:
    async with scheduler.hold(deployment) as lease:
        return lease


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
