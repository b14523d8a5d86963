"""Exact-match response cache for deterministic requests (temperature 0 or a fixed seed).

The key is a hash of the public model name, the endpoint, whether the answer is streamed, and the
request fields that shape the answer (sorted; `stream_options` and `user` left out). Entries live
in memory (LRU, bounded in count and entry size) on one node, or in Redis when `redis_url` is set
so replicas share them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

# Fields that do not change what the model answers.
_IGNORED_FIELDS = {"stream", "stream_options", "user", "keep_alive"}
KEY_PREFIX = "hearth:cache:"


def is_deterministic(fields: dict[str, Any]) -> bool:
    return fields.get("temperature") == 0 or fields.get("seed") is not None


def cache_key(model: str, path: str, stream: bool, fields: dict[str, Any]) -> str:
    shaping = {k: v for k, v in fields.items() if k not in _IGNORED_FIELDS}
    canonical = json.dumps([model, path, stream, shaping], sort_keys=True, separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def aclose(self) -> None: ...


class MemoryCache:
    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        self._entries[key] = (self._clock() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class RedisCache:
    """Entries in Redis with its own expiry, shared by every replica using the same Redis."""

    def __init__(self, url: str, ttl: float) -> None:
        import redis.asyncio as redis  # only needed when Redis is configured

        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._ttl_ms = max(1, int(ttl * 1000))

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes) -> None:
        await self._redis.set(key, value, px=self._ttl_ms)

    async def aclose(self) -> None:
        await self._redis.aclose()
