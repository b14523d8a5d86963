"""Requests and tokens per minute, per key and per team: a sliding-window counter (this minute's
count plus the last minute's, weighted by how much of it is still inside the window).

In memory on one replica; in Redis when `redis_url` is set, so the limit holds across replicas
(one atomic script per check). A Redis outage falls back to this replica's memory."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

WINDOW = 60.0
Kind = Literal["requests", "tokens"]
Mode = Literal["take", "peek", "add"]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: float  # seconds until the window has room again (for the headers)
    retry_after: float  # seconds to wait when refused

    def headers(self, kind: Kind) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for this counter."""
        return {
            f"x-ratelimit-limit-{kind}": str(self.limit),
            f"x-ratelimit-remaining-{kind}": str(self.remaining),
            f"x-ratelimit-reset-{kind}": _duration(self.reset),
        }


def decide(mode: Mode, limit: int, amount: int, cur: int, prev: int, now: float) -> Decision:
    """`take`: allowed if `amount` more still fits; `peek`: allowed if any room is left."""
    elapsed = now % WINDOW
    weight = 1.0 - elapsed / WINDOW
    estimate = cur + prev * weight
    need = amount if mode == "take" else 1
    allowed = estimate + need <= limit
    after = estimate + (amount if allowed and mode == "take" else 0)
    wait = 0.0 if allowed else _wait(limit, need, cur, prev, elapsed)
    return Decision(
        allowed=allowed,
        limit=limit,
        remaining=max(0, math.floor(limit - after)),
        reset=max(wait, WINDOW - elapsed if after > 0 else 0.0),
        retry_after=wait,
    )


def _wait(limit: int, need: int, cur: int, prev: int, elapsed: float) -> float:
    """Seconds until the estimate leaves room for `need`."""
    room = limit - need
    if prev > 0 and cur <= room:
        return max(0.0, WINDOW * (1 - (room - cur) / prev) - elapsed)
    # Not before the next window, where this one's count becomes the weighted past.
    into_next = WINDOW * (1 - room / cur) if cur > 0 and room < cur else 0.0
    return WINDOW - elapsed + max(0.0, into_next)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: '1s', '6m0s', '350ms'."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


class Counter(Protocol):
    @property
    def shared(self) -> bool: ...

    async def check(
        self, subject: str, kind: Kind, mode: Mode, limit: int, amount: int
    ) -> Decision: ...

    async def aclose(self) -> None: ...


class MemoryCounter:
    """Counters of this replica: {(subject, kind): [window index, this window, last window]}."""

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self._counts: dict[tuple[str, str], list[int]] = {}

    async def check(
        self, subject: str, kind: Kind, mode: Mode, limit: int, amount: int
    ) -> Decision:
        return self.check_now(subject, kind, mode, limit, amount)

    def _state(self, subject: str, kind: Kind, now: float) -> list[int]:
        index = int(now // WINDOW)
        state = self._counts.get((subject, kind))
        if state is None or state[0] < index - 1:
            state = self._counts[(subject, kind)] = [index, 0, 0]
        elif state[0] == index - 1:
            state = self._counts[(subject, kind)] = [index, 0, state[1]]
        return state

    def add_now(self, subject: str, kind: Kind, amount: int) -> None:
        self._state(subject, kind, self.clock())[1] += amount

    def check_now(self, subject: str, kind: Kind, mode: Mode, limit: int, amount: int) -> Decision:
        now = self.clock()
        state = self._state(subject, kind, now)
        if mode == "add":
            state[1] += amount
            return decide("peek", limit, 0, state[1], state[2], now)
        decision = decide(mode, limit, amount, state[1], state[2], now)
        if decision.allowed and mode == "take":
            state[1] += amount
        return decision

    def this_window(self) -> list[tuple[str, str, int]]:
        """(subject, kind, count) of the current window, for handing over to shared counters."""
        index = int(self.clock() // WINDOW)
        return [(s, k, state[1]) for (s, k), state in self._counts.items() if state[0] == index]

    def clear(self) -> None:
        self._counts.clear()

    @property
    def shared(self) -> bool:
        return False  # this replica's own counts

    async def aclose(self) -> None:
        return None


# KEYS: this window, last window. ARGV: mode, limit, amount, weight of the last window.
_SCRIPT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local mode = ARGV[1]
local limit = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local estimate = cur + prev * tonumber(ARGV[4])
local taken = 0
if mode == 'add' or (mode == 'take' and estimate + amount <= limit) then
  cur = redis.call('INCRBY', KEYS[1], amount)
  redis.call('EXPIRE', KEYS[1], 130)
  taken = 1
end
return {cur, prev, taken}
"""


class RedisCounter:
    """The same counters in Redis, shared by every replica that uses the same Redis."""

    def __init__(self, url: str, prefix: str = "hearth:rl:") -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self._redis: Any = aioredis.Redis.from_url(url, socket_timeout=1.0)
        self._script: Any = self._redis.register_script(_SCRIPT)
        self._fallback = MemoryCounter()
        self._failing = False

    async def check(
        self, subject: str, kind: Kind, mode: Mode, limit: int, amount: int
    ) -> Decision:
        now = time.time()
        index = int(now // WINDOW)
        base = f"{self.prefix}{subject}:{kind}:"
        weight = 1.0 - (now % WINDOW) / WINDOW
        try:
            before = await self._script(
                keys=[f"{base}{index}", f"{base}{index - 1}"],
                args=[mode, limit, amount, repr(weight)],
            )
        except Exception as exc:  # an outage must not stop requests: count here meanwhile
            if not self._failing:
                log.warning(
                    "Redis unavailable for rate limits (%s): each replica counts on its own "
                    "until it is back (hearth_rate_limits_shared 0, /ready says so)",
                    type(exc).__name__,
                )
                self._failing = True
            return self._fallback.check_now(subject, kind, mode, limit, amount)
        if self._failing:
            self._failing = False
            await self._hand_over(index)
            log.info("Redis is back; rate limits are shared again")
        cur, prev, taken = int(before[0]), int(before[1]), bool(before[2])
        after = decide("peek", limit, 0, cur, prev, now)
        if mode == "add" or mode == "peek":
            return after
        if taken:
            return Decision(True, limit, after.remaining, after.reset, 0.0)
        refused = decide("take", limit, amount, cur, prev, now)
        return Decision(False, limit, 0, refused.reset, max(refused.retry_after, 0.5))

    async def _hand_over(self, index: int) -> None:
        """Add what was counted in memory during the outage to the shared counters, so the
        window's limits hold across it."""
        counted, self._fallback = self._fallback.this_window(), MemoryCounter()
        for subject, kind, amount in counted:
            base = f"{self.prefix}{subject}:{kind}:"
            if amount <= 0:
                continue
            try:
                await self._script(
                    keys=[f"{base}{index}", f"{base}{index - 1}"], args=["add", 0, amount, "0"]
                )
            except Exception:  # down again: the next check notices
                return

    @property
    def shared(self) -> bool:
        """False while Redis is unreachable and this replica counts on its own."""
        return not self._failing

    async def aclose(self) -> None:
        await self._redis.aclose()
