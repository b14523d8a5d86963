"""A model's request slots: the engine's parallel slots are never oversubscribed; waiting
requests go by priority, then arrival; the queue is bounded."""

from __future__ import annotations

import asyncio

import pytest

from hearth.errors import ServerBusy
from hearth.scheduler.slots import RequestSlots


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiters_go_by_priority_then_arrival() -> None:
    slots = RequestSlots("m", slots=1, queue_size=10)
    order: list[str] = []
    gate = asyncio.Event()

    async def request(name: str, priority: int) -> None:
        async with slots.hold(priority):
            order.append(name)
            await gate.wait()

    first = asyncio.create_task(request("first", 0))
    await settle()
    waiters = [
        asyncio.create_task(request(name, priority))
        for name, priority in (("low", -1), ("normal-a", 0), ("high", 5), ("normal-b", 0))
    ]
    await settle()
    assert (slots.busy, slots.queued) == (1, 4)
    gate.set()
    await asyncio.gather(first, *waiters)
    assert order == ["first", "high", "normal-a", "normal-b", "low"]
    assert (slots.busy, slots.queued) == (0, 0)


async def test_never_more_in_flight_than_slots() -> None:
    slots = RequestSlots("m", slots=3, queue_size=100)
    running = peak = 0

    async def request() -> None:
        nonlocal running, peak
        async with slots.hold():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(request() for _ in range(20)))
    assert peak == 3
    assert slots.busy == 0


async def test_a_full_queue_is_503_with_retry_after() -> None:
    slots = RequestSlots("m", slots=1, queue_size=1)
    gate = asyncio.Event()

    async def request() -> None:
        async with slots.hold():
            await gate.wait()

    tasks = [asyncio.create_task(request()) for _ in range(2)]  # one decoding, one queued
    await settle()
    with pytest.raises(ServerBusy, match="1 slots are in use and 1 requests are queued") as busy:
        async with slots.hold():
            pass
    assert busy.value.headers == {"retry-after": "2"}
    gate.set()
    await asyncio.gather(*tasks)


async def test_a_waiter_that_gives_up_does_not_keep_a_slot() -> None:
    slots = RequestSlots("m", slots=1, queue_size=10)
    gate = asyncio.Event()

    async def request() -> None:
        async with slots.hold():
            await gate.wait()

    holder = asyncio.create_task(request())
    await settle()
    quitter = asyncio.create_task(request())
    await settle()
    quitter.cancel()  # the client hung up while queued
    await asyncio.gather(quitter, return_exceptions=True)
    assert slots.queued == 0
    gate.set()
    await holder
    assert slots.busy == 0
    async with slots.hold():  # the slot is free again
        assert slots.busy == 1
