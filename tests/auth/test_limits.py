"""Sliding-window counters, in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from hearth.auth.limits import MemoryCounter, RedisCounter, decide
from support.access import REDIS_URL, reachable


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_requests_per_minute_in_memory() -> None:
    clock = Clock(6000.0)  # the start of a window
    counter = MemoryCounter(clock)
    first = await counter.check("key:a", "requests", "take", 2, 1)
    assert first.allowed and first.remaining == 1
    assert first.headers("requests")["x-ratelimit-limit-requests"] == "2"
    assert (await counter.check("key:a", "requests", "take", 2, 1)).remaining == 0
    refused = await counter.check("key:a", "requests", "take", 2, 1)
    assert not refused.allowed and refused.retry_after > 0
    assert (await counter.check("key:b", "requests", "take", 2, 1)).allowed  # its own count
    # Next window: last minute's two still weigh in at first, then fade out.
    clock.now = 6060.0 + 1
    assert not (await counter.check("key:a", "requests", "take", 2, 1)).allowed
    clock.now = 6060.0 + 31
    assert (await counter.check("key:a", "requests", "take", 2, 1)).allowed
    clock.now = 6300.0
    assert (await counter.check("key:a", "requests", "take", 2, 1)).remaining == 1


async def test_tokens_are_checked_before_and_counted_after() -> None:
    counter = MemoryCounter(Clock(6000.0))
    assert (await counter.check("key:a", "tokens", "peek", 10, 0)).allowed
    await counter.check("key:a", "tokens", "add", 10, 8)
    peek = await counter.check("key:a", "tokens", "peek", 10, 0)
    assert peek.allowed and peek.remaining == 2
    await counter.check("key:a", "tokens", "add", 10, 8)
    refused = await counter.check("key:a", "tokens", "peek", 10, 0)
    assert not refused.allowed and refused.remaining == 0


def test_retry_after_waits_for_the_window_to_slide() -> None:
    # 30 s into a window, 10 used now and 10 in the last: estimate 15 of 10.
    decision = decide("take", 10, 1, cur=10, prev=10, now=6030.0)
    assert not decision.allowed
    # Room for one more only after the next window began and a tenth of it passed.
    assert decision.retry_after == pytest.approx(30 + 6)
    assert decision.headers("requests")["x-ratelimit-reset-requests"] == "36s"


@pytest.mark.skipif(not reachable("127.0.0.1", 6379), reason="no Redis on 127.0.0.1:6379")
async def test_redis_counts_are_shared_by_every_counter_on_it() -> None:
    prefix = f"hearth-test:{uuid.uuid4().hex}:"
    one, two = RedisCounter(REDIS_URL, prefix), RedisCounter(REDIS_URL, prefix)
    try:
        assert (await one.check("key:a", "requests", "take", 3, 1)).allowed
        assert (await two.check("key:a", "requests", "take", 3, 1)).allowed
        third = await one.check("key:a", "requests", "take", 3, 1)
        assert third.allowed and third.remaining == 0
        refused = await two.check("key:a", "requests", "take", 3, 1)
        assert not refused.allowed and refused.retry_after > 0
        await one.check("key:a", "tokens", "add", 5, 6)
        assert not (await two.check("key:a", "tokens", "peek", 5, 0)).allowed
    finally:
        async for name in one._redis.scan_iter(f"{prefix}*"):
            await one._redis.delete(name)
        await one.aclose()
        await two.aclose()


async def test_redis_outage_falls_back_to_memory() -> None:
    counter = RedisCounter("redis://127.0.0.1:9/0")  # nothing listens on the discard port
    try:
        assert (await counter.check("key:a", "requests", "take", 1, 1)).allowed
        assert not (await counter.check("key:a", "requests", "take", 1, 1)).allowed
    finally:
        await counter.aclose()


class Relay:
    """A TCP relay to the real Redis that can be cut and restored: an outage on demand."""

    def __init__(self) -> None:
        self.up = True
        self.links: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.links += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in self.links:
            writer.close()
        self.links.clear()

    async def aclose(self) -> None:
        self.cut()
        self.server.close()


async def test_counts_made_during_a_redis_outage_are_handed_over_when_it_is_back() -> None:
    relay = Relay()
    port = await relay.start()
    prefix = f"hearth-test:{uuid.uuid4().hex}:"
    counter = RedisCounter(f"redis://127.0.0.1:{port}/0", prefix)
    other = RedisCounter(REDIS_URL, prefix)  # another replica, always reaching Redis
    try:
        assert (await counter.check("key:b", "requests", "take", 5, 1)).allowed
        assert counter.shared
        relay.cut()
        for _ in range(3):  # counted in memory meanwhile
            assert (await counter.check("key:b", "requests", "take", 5, 1)).allowed
        assert not counter.shared
        relay.up = True
        await counter.check("key:c", "requests", "take", 5, 1)  # Redis is back
        assert counter.shared
        # 1 before the outage + 3 during it: one more fits under 5, then none.
        assert (await other.check("key:b", "requests", "take", 5, 1)).allowed
        assert not (await other.check("key:b", "requests", "take", 5, 1)).allowed
    finally:
        async for name in other._redis.scan_iter(f"{prefix}*"):
            await other._redis.delete(name)
        await counter.aclose()
        await other.aclose()
        await relay.aclose()
