"""Several replicas over a real PostgreSQL and a real Redis: one global rate limit, one
revocation; and a database outage that leaves cached keys working."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from support.access import (
    ADMIN_KEY,
    REDIS_URL,
    block_pg_database,
    chat,
    create_key,
    gateway_config,
    pg_database,
    query,
    reachable,
)
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    not reachable("127.0.0.1", 5432), reason="no PostgreSQL on 127.0.0.1:5432"
)
needs_redis = pytest.mark.skipif(
    not reachable("127.0.0.1", 6379), reason="no Redis on 127.0.0.1:6379"
)


@pytest.fixture
def database() -> Iterator[str]:
    with pg_database() as url:
        yield url


def start(
    start_hearth: StartHearth,
    upstream: ScriptedUpstream,
    tmp_path: Path,
    database: str,
    extra: str = "",
) -> HearthServer:
    config = gateway_config(
        tmp_path / f"hearth-{uuid.uuid4().hex[:6]}.yaml", upstream, database, {"free": ""}, extra
    )
    return start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})


@needs_redis
def test_two_replicas_share_one_rpm_limit_and_one_revocation(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path, database: str
) -> None:
    record, key = create_key(database, "shared", rpm=4)
    extra = f"redis_url: '{REDIS_URL}'\n"
    a = start(start_hearth, upstream, tmp_path, database, extra)
    b = start(start_hearth, upstream, tmp_path, database, extra)
    try:
        statuses = [chat(server, key).status_code for server in (a, b, a, b, a, b)]
        assert statuses == [200, 200, 200, 200, 429, 429]

        created = httpx.post(
            f"{a.base_url}/admin/keys",
            json={"name": "revoked-everywhere"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
        wait_for(lambda: chat(b, created["key"]).status_code == 200)
        revoked = httpx.delete(
            f"{a.base_url}/admin/keys/{created['prefix']}",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert revoked.status_code == 200
        assert chat(a, created["key"]).status_code == 401
        wait_for(lambda: chat(b, created["key"]).status_code == 401, timeout=3)  # 0.5 s refresh
    finally:
        a.stop()
        b.stop()
        client = redis.Redis.from_url(REDIS_URL)
        for name in client.scan_iter(f"hearth:rl:key:{record.id}:*"):
            client.delete(name)
        client.close()


def test_a_database_outage_keeps_cached_keys_working(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path, database: str
) -> None:
    """The database refuses connections (open ones are terminated) for a while, mid-service:
    keys keep working from the cache, usage rows wait in memory and arrive once it is back."""
    record, key = create_key(database, "survivor")
    server = start(start_hearth, upstream, tmp_path, database)
    try:
        assert chat(server, key).status_code == 200
        block_pg_database(database, blocked=True)
        served = 1
        for _ in range(20):  # 2 s: four refresh intervals
            assert chat(server, key).status_code == 200
            assert chat(server, "hk_00000000_unknown").status_code == 401
            served += 1
            time.sleep(0.1)
        assert "database unavailable" in server.log()
        block_pg_database(database, blocked=False)
        wait_for(
            lambda: (
                query(database, f"SELECT count(*) FROM usage WHERE key_id = '{record.id}'")[0][0]
                == served
            ),
            timeout=10,
        )
        # Said once the loop that flushed them has finished its round.
        wait_for(lambda: "database reachable again" in server.log(), timeout=10)
    finally:
        block_pg_database(database, blocked=False)
        server.stop()
