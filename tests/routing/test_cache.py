"""The response cache: keys, determinism, the in-memory LRU, and Redis (the real one)."""

from __future__ import annotations

import uuid

import pytest
import redis

from hearth.routing.cache import MemoryCache, RedisCache, cache_key, is_deterministic

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_only_deterministic_requests_are_cacheable() -> None:
    assert is_deterministic({"temperature": 0})
    assert is_deterministic({"seed": 3, "temperature": 0.8})
    assert not is_deterministic({"temperature": 0.7})
    assert not is_deterministic({})


def test_the_key_ignores_field_order_and_fields_that_do_not_shape_the_answer() -> None:
    one = cache_key(
        "m", "/chat/completions", False, {"temperature": 0, "messages": [1], "user": "a"}
    )
    two = cache_key(
        "m", "/chat/completions", False, {"messages": [1], "temperature": 0, "user": "b"}
    )
    assert one == two
    assert one != cache_key("m", "/chat/completions", True, {"temperature": 0, "messages": [1]})
    assert one != cache_key(
        "other", "/chat/completions", False, {"temperature": 0, "messages": [1]}
    )
    assert one != cache_key("m", "/chat/completions", False, {"temperature": 0, "messages": [2]})


async def test_memory_cache_expires_and_evicts_the_least_recently_used() -> None:
    now = [0.0]
    cache = MemoryCache(ttl=10, max_entries=2, clock=lambda: now[0])
    await cache.set("a", b"1")
    await cache.set("b", b"2")
    assert await cache.get("a") == b"1"  # a is now the most recent
    await cache.set("c", b"3")
    assert await cache.get("b") is None
    assert await cache.get("a") == b"1" and await cache.get("c") == b"3"
    now[0] = 10
    assert await cache.get("a") is None
    assert len(cache) == 1


def redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")


async def test_redis_cache_shares_entries_between_instances_and_expires_them() -> None:
    redis_or_skip()
    key = f"hearth:cache:test-{uuid.uuid4().hex}"
    first, second = RedisCache(REDIS_URL, ttl=60), RedisCache(REDIS_URL, ttl=0.2)
    try:
        await first.set(key, b"answer")
        assert await second.get(key) == b"answer"
        await second.set(key, b"short-lived")
        assert 0 < redis.Redis.from_url(REDIS_URL).pttl(key) <= 200
    finally:
        redis.Redis.from_url(REDIS_URL).delete(key)
        await first.aclose()
        await second.aclose()
