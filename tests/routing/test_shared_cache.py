"""Two gateway replicas sharing the response cache through the real Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import redis

from support.hearth_server import StartHearth
from support.scripted_upstream import ScriptedUpstream

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_a_cached_answer_is_shared_by_replicas(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    config = tmp_path / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        f"redis_url: '{REDIS_URL}'\n"
        "cache: {enabled: true, ttl: 30}\n"
        f"deployments:\n  shared: {{url: '{upstream.url('shared')}'}}\n"
    )
    first, second = (start_hearth("--config", str(config)) for _ in range(2))
    # A question no earlier run asked: the cache key includes it.
    body = {
        "model": "shared",
        "messages": [{"role": "user", "content": f"hi {uuid.uuid4().hex}"}],
        "seed": 1,
    }
    miss = httpx.post(f"{first.base_url}/v1/chat/completions", json=body, timeout=30)
    hit = httpx.post(f"{second.base_url}/v1/chat/completions", json=body, timeout=30)
    assert miss.headers["x-hearth-cache"] == "miss"
    assert hit.headers["x-hearth-cache"] == "hit"
    assert hit.json() == miss.json()
    assert upstream.hits("shared") == 1
