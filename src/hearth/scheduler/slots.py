"""A model's request slots: at most as many requests reach the engine as it has parallel slots;
the others wait in a bounded queue, higher priority first, then first come, first served, for at
most `queue_timeout` seconds. A waiter whose client left (its task cancelled) leaves the queue
and never starts."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

from hearth.errors import ServerBusy


class RequestSlots:
    def __init__(
        self, name: str, slots: int, queue_size: int, queue_timeout: float | None = None
    ) -> None:
        self.name = name
        self.slots = slots
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.busy = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def queued(self) -> int:
        return sum(1 for _, _, future in self._waiting if not future.done())

    @contextlib.asynccontextmanager
    async def hold(self, priority: int = 0) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self.busy < self.slots and not self.queued:
            self.busy += 1
            return
        if self.queued >= self.queue_size:
            raise ServerBusy(
                f"The model '{self.name}' is busy: its {self.slots} slots are in use and "
                f"{self.queued} requests are queued; retry shortly.",
                retry_after=2,
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._order), future))
        try:
            async with asyncio.timeout(self.queue_timeout):
                await future  # resolved by _release, which hands its slot over
        except (asyncio.CancelledError, TimeoutError) as exc:
            if future.done() and not future.cancelled():
                self._release()  # the slot was handed over just as the wait ended
            if isinstance(exc, TimeoutError):
                raise ServerBusy(
                    f"The model '{self.name}' is busy: no slot came free within "
                    f"{self.queue_timeout:g} s (request_queue_timeout); retry shortly.",
                    retry_after=max(1, round((self.queue_timeout or 2) / 4)),
                ) from None
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the slot passes on: busy stays the same
                return
        self.busy -= 1
