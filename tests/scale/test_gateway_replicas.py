"""Three `hearth serve` replicas sharing PostgreSQL and Redis behind a real nginx (issue 15).

What they must show: one global RPM and TPM limit, exact; usage rows equal to what clients saw;
a key revoked on one replica refused by all within `auth.refresh_interval`; one response cache;
and one replica SIGKILLed under load with nothing a client saw succeed missing from usage.

Upstreams. The replicas start no engine of their own (three would not fit 2 cores): the limit,
ledger, revocation and cache checks use ONE real llama-server with the bundled model, started
here and registered in every replica as the remote deployment `gemma` (2 tokens an answer, so
token counts are the model's own). The SIGKILL check uses the scripted upstream
(support.scripted_upstream) answering after 0.2 s: it is about the gateway, and a fixed delay
keeps requests in flight on the replica when it dies without spending the cores on generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from sqlalchemy import text

from hearth.config import Settings
from hearth.db.engine import create_engine
from hearth.engines.llama_cpp.launcher import bundled_template
from hearth.models.bundled import BUNDLED_TEMPLATE, bundled_model_path
from support.access import ADMIN_KEY, REDIS_URL, create_key, pg_database, reachable
from support.balancer import UPSTREAM_HEADER, Balancer, find_nginx
from support.hearth_server import HearthServer, StartHearth
from support.ports import free_port
from support.scripted_upstream import ScriptedUpstream
from support.waiting import wait_for

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not reachable("127.0.0.1", 5432), reason="no PostgreSQL on :5432"),
    pytest.mark.skipif(not reachable("127.0.0.1", 6379), reason="no Redis on :6379"),
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (make test-setup)"),
]

REFRESH_S = 1.0  # auth.refresh_interval of every replica
FLUSH_S = 0.2  # usage.flush_interval
RPM = 6
CHAT: dict[str, Any] = {
    "model": "gemma",
    "messages": [{"role": "user", "content": "Say hi."}],
    "max_tokens": 2,
    "temperature": 0,
}
NO_STORE = {"cache-control": "no-store"}  # deterministic, but the limit checks want the model


# -- Talking to the replicas ---------------------------------------------------------------------


@dataclass
class Answer:
    """What a client saw of one request (one attempt)."""

    request_id: str
    model: str
    status: int  # 0: the connection failed or broke off before a complete answer
    complete: bool = False  # 200 and, for a stream, every event up to [DONE] without an error
    tokens: int | None = None  # prompt + completion, from the answer's usage
    content: str = ""
    cache: str | None = None
    upstream: int | None = None  # the replica's port nginx finally sent it to
    error_code: str | None = None
    headers: dict[str, str] | None = None


def _events(raw: bytes) -> list[dict[str, Any]] | None:
    """A stream's JSON events, or None if it did not end with [DONE]."""
    lines = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    if not lines or lines[-1] != "[DONE]":
        return None
    return [json.loads(line) for line in lines[:-1]]


def _read(answer: Answer, raw: bytes, stream: bool) -> None:
    if answer.status == 200 and stream:
        events = _events(raw)
        answer.complete = events is not None and not any("error" in e for e in events)
        for event in events or []:
            if event.get("usage"):
                answer.tokens = event["usage"]["total_tokens"]
            for choice in event.get("choices", []):
                answer.content += choice["delta"].get("content") or ""
        return
    try:
        body = json.loads(raw)
    except ValueError:  # nginx's own error page
        return
    if answer.status == 200:
        answer.complete = True
        answer.tokens = body["usage"]["total_tokens"]
        answer.content = body["choices"][0]["message"]["content"]
    else:
        answer.error_code = body["error"]["code"]


async def post(
    client: httpx.AsyncClient,
    base_url: str,
    key: str,
    body: dict[str, Any],
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One chat request, streamed if the body says so; a broken connection is status 0."""
    request_id = request_id or uuid.uuid4().hex
    sent = {"authorization": f"Bearer {key}", "x-request-id": request_id, **(headers or {})}
    answer = Answer(request_id, body["model"], 0)
    try:
        async with client.stream(
            "POST", f"{base_url}/v1/chat/completions", json=body, headers=sent
        ) as reply:
            answer.status = reply.status_code
            answer.headers = dict(reply.headers)
            answer.cache = reply.headers.get("x-hearth-cache")
            if upstream := reply.headers.get(UPSTREAM_HEADER):  # "ip:port[, ip:port...]"
                answer.upstream = int(upstream.split(",")[-1].rsplit(":", 1)[1])
            raw = await reply.aread()
    except httpx.TransportError:
        answer.status, answer.complete = 0, False
        return answer
    _read(answer, raw, bool(body.get("stream")))
    return answer


def burst(base_url: str, key: str, bodies: list[dict[str, Any]], **kw: Any) -> list[Answer]:
    """All the requests at once, each on its own connection."""

    async def run() -> list[Answer]:
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(*(post(client, base_url, key, b, **kw) for b in bodies))

    return asyncio.run(run())


def ask(base_url: str, key: str, body: dict[str, Any], **kw: Any) -> Answer:
    (answer,) = burst(base_url, key, [body], **kw)
    return answer


def models_status(base_url: str, key: str) -> int:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.get(f"{base_url}/v1/models", headers=headers, timeout=10).status_code


def wait_key_status(urls: list[str], key: str, status: int, timeout: float) -> None:
    """Until every one of these servers answers `status` to the key (GET /v1/models)."""
    wait_for(
        lambda: all(models_status(url, key) == status for url in urls),
        timeout,
        f"{status} from {len(urls)} replicas",
    )


def admin(server: HearthServer, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.request(method, f"{server.base_url}{path}", headers=headers, timeout=10, **kw)


# -- The shared state ----------------------------------------------------------------------------


def usage_rows(database: str, key_id: str) -> list[Any]:
    async def read() -> list[Any]:
        engine = create_engine(Settings(database_url=database))
        try:
            async with engine.connect() as conn:
                sql = text("SELECT * FROM usage WHERE key_id = :key ORDER BY id")
                return list((await conn.execute(sql, {"key": key_id})).all())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def settled_rows(database: str, key_id: str, expected: int) -> list[Any]:
    """The key's usage rows once `expected` have arrived and a few more flushes brought no
    more (so a surplus shows as one)."""
    wait_for(lambda: len(usage_rows(database, key_id)) >= expected, 10, f"{expected} usage rows")
    time.sleep(4 * FLUSH_S)
    return usage_rows(database, key_id)


def counted_tokens(key_id: str) -> int:
    """This key's tokens in the shared Redis counters (all windows)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        names = client.scan_iter(f"hearth:rl:key:{key_id}:tokens:*")
        return sum(int(client.get(name) or 0) for name in names)
    finally:
        client.close()


def wait_counted(key_id: str, tokens: int) -> None:
    wait_for(lambda: counted_tokens(key_id) == tokens, 5, f"{tokens} tokens counted in Redis")


# -- The cluster ---------------------------------------------------------------------------------


@dataclass
class Configs:
    """Writes a replica's settings: the shared database and Redis, both upstreams."""

    folder: Path
    database: str
    engine_port: int
    upstream: ScriptedUpstream

    def write(self, name: str, flush_s: float = FLUSH_S, refresh_s: float = REFRESH_S) -> Path:
        settings = {
            "preload": [],
            "database_url": self.database,
            "redis_url": REDIS_URL,
            "cache": {"enabled": True, "ttl": 60},
            "routing": {"retries": 0, "health_check_interval": 0},
            "auth": {"admin_key": "env:TEST_ADMIN_KEY", "refresh_interval": refresh_s},
            "usage": {"flush_interval": flush_s},
            "deployments": {
                "gemma": {"url": f"http://127.0.0.1:{self.engine_port}/v1"},
                "scripted": {"url": self.upstream.url("scripted")},
            },
        }
        path = self.folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path


@dataclass
class Cluster:
    configs: Configs
    replicas: list[HearthServer]
    balancer: Balancer
    keys: dict[str, tuple[str, str]]  # name -> (id, key); tests add theirs

    @property
    def url(self) -> str:
        return self.balancer.url

    @property
    def database(self) -> str:
        return self.configs.database

    @property
    def upstream(self) -> ScriptedUpstream:
        return self.configs.upstream


@pytest.fixture(scope="module")
def engine_port(
    llama_server_binary: Path, bundled_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """One real llama-server with the bundled model, shared by every replica."""
    port = free_port()
    argv = [
        str(llama_server_binary),
        "--model", str(bundled_model_path(bundled_model_dir)),
        "--alias", "gemma",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", "2048",
        "--parallel", "4",
        "--no-webui",
        "--jinja", "--chat-template-file", str(bundled_template(BUNDLED_TEMPLATE)),
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("engine") / "llama-server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        return False

    try:
        wait_for(healthy, 120, "llama-server")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster(
    start_hearth: StartHearth,
    upstream: ScriptedUpstream,
    engine_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    nginx = find_nginx()
    assert nginx is not None
    with pg_database() as database:
        keys = {}
        for name, options in {"rpm": {"rpm": RPM}, "probe": {}, "ledger": {}, "cache": {}}.items():
            record, key = create_key(database, name, **options)  # migrates the database too
            keys[name] = (record.id, key)
        configs = Configs(tmp_path_factory.mktemp("configs"), database, engine_port, upstream)
        env = {"TEST_ADMIN_KEY": ADMIN_KEY}
        replicas = [
            start_hearth("--config", str(configs.write(f"r{i}")), env=env, ready=False)
            for i in range(3)
        ]
        balancer: Balancer | None = None
        try:
            for replica in replicas:  # started together, as a deployment's would be
                replica.wait_ready()
            balancer = Balancer(nginx, tmp_path_factory.mktemp("nginx"), [r.port for r in replicas])
            cluster = Cluster(configs, replicas, balancer, keys)
            yield cluster
        finally:
            if balancer is not None:
                balancer.stop()
            for replica in replicas:
                replica.stop()  # before the database is dropped
            client = redis.Redis.from_url(REDIS_URL)
            for key_id, _ in keys.values():
                for name in client.scan_iter(f"hearth:rl:key:{key_id}:*"):
                    client.delete(name)
            client.close()


def replicas_of(answers: list[Answer]) -> set[int | None]:
    return {a.upstream for a in answers}


# -- The checks ----------------------------------------------------------------------------------


def test_one_rpm_limit_holds_exactly_across_replicas(cluster: Cluster) -> None:
    """3 x RPM concurrent requests through nginx: exactly RPM succeed, whichever replica took
    them (per-replica counters would let up to 3 x RPM through), and only they have usage rows
    (a refusal writes none)."""
    key_id, key = cluster.keys["rpm"]
    answers = burst(cluster.url, key, [CHAT] * (3 * RPM), headers=NO_STORE)
    assert Counter(a.status for a in answers) == {200: RPM, 429: 2 * RPM}
    assert {a.error_code for a in answers if a.status == 429} == {"rate_limit_exceeded"}
    assert replicas_of(answers) == {r.port for r in cluster.replicas}, "nginx spread the burst"
    rows = settled_rows(cluster.database, key_id, RPM)
    assert sorted(r.request_id for r in rows) == sorted(a.request_id for a in answers if a.complete)
    assert {r.status for r in rows} == {200}


def test_one_tpm_limit_holds_exactly_across_replicas(cluster: Cluster) -> None:
    """A TPM of 2.5 requests' tokens, sequential requests spread over the replicas: exactly 3
    succeed (a request is let in while any of the minute's tokens is left), and the shared
    counter holds exactly the tokens the clients were answered with."""
    probe = ask(cluster.url, cluster.keys["probe"][1], CHAT, headers=NO_STORE)
    assert probe.complete and probe.tokens
    limit = probe.tokens * 5 // 2
    made = admin(cluster.replicas[0], "POST", "/admin/keys", json={"name": "tpm", "tpm": limit})
    assert made.status_code == 200, made.text
    key_id, key = made.json()["id"], made.json()["key"]
    cluster.keys["tpm"] = (key_id, key)
    wait_key_status([r.base_url for r in cluster.replicas], key, 200, REFRESH_S + 3)

    answers: list[Answer] = []
    for _ in range(6):
        answers.append(ask(cluster.url, key, CHAT, headers=NO_STORE))
        # Tokens are counted when an answer has ended, in the background (documented): wait for
        # that count, so this checks that the replicas share it rather than that race.
        wait_counted(key_id, sum(a.tokens or 0 for a in answers if a.complete))
    assert [a.status for a in answers] == [200] * 3 + [429] * 3
    assert {a.headers["x-ratelimit-limit-tokens"] for a in answers if a.headers} == {str(limit)}
    assert replicas_of(answers) == {r.port for r in cluster.replicas}


def test_usage_rows_equal_what_clients_saw(cluster: Cluster) -> None:
    """A concurrent mix through nginx (the real model and the scripted upstream, streamed and
    not, three upstream 502s that a balancer must not resend: the replica has answered them):
    the usage rows are exactly the clients' view, per request id, model, status and tokens;
    nothing counted twice by a retry."""
    key_id, key = cluster.keys["ledger"]
    cluster.upstream.script("scripted", "status:502", "status:502", "status:502")
    streamed = {"stream": True, "stream_options": {"include_usage": True}}
    bodies = [
        {**CHAT, "model": model, **(streamed if stream else {})}
        for model in ("gemma", "scripted")
        for stream in (False, True)
        for _ in range(3)
    ]
    answers = burst(cluster.url, key, bodies, headers=NO_STORE)
    seen = Counter((a.model, a.status) for a in answers)
    assert seen[("gemma", 200)] == 6 and seen[("scripted", 200)] == 3, seen
    assert all(a.complete for a in answers if a.status == 200)

    rows = settled_rows(cluster.database, key_id, len(answers))
    assert Counter((r.model, r.status) for r in rows) == seen
    by_id = {r.request_id: r for r in rows}
    assert len(by_id) == len(rows) == len(answers)
    for a in answers:
        row = by_id[a.request_id]
        assert (row.model, row.status) == (a.model, a.status)
        if a.complete:
            assert row.prompt_tokens + row.completion_tokens == a.tokens


def test_a_key_revoked_on_one_replica_is_refused_by_all(cluster: Cluster) -> None:
    """Created and revoked through replica A's admin API: A refuses it at once, the others
    within auth.refresh_interval (1 s; the wait allows 2 s more for the reload itself on a
    loaded machine), and so does the balancer."""
    first, *others = cluster.replicas
    made = admin(first, "POST", "/admin/keys", json={"name": "revoked-everywhere"})
    assert made.status_code == 200, made.text
    key = made.json()["key"]
    wait_key_status([r.base_url for r in cluster.replicas], key, 200, REFRESH_S + 3)

    assert admin(first, "DELETE", f"/admin/keys/{made.json()['prefix']}").status_code == 200
    assert models_status(first.base_url, key) == 401
    wait_key_status([r.base_url for r in others], key, 401, REFRESH_S + 2)
    assert ask(cluster.url, key, CHAT).status == 401


def test_the_response_cache_is_shared(cluster: Cluster) -> None:
    """A deterministic request answered by replica A (the real model) is a hit on B, on C and
    through nginx: one cache, in Redis; the hits' usage rows say so."""
    key_id, key = cluster.keys["cache"]
    body = {**CHAT, "messages": [{"role": "user", "content": f"Say {uuid.uuid4().hex[:8]}."}]}
    answers = [ask(r.base_url, key, body) for r in cluster.replicas]
    answers.append(ask(cluster.url, key, body))
    assert [a.cache for a in answers] == ["miss", "hit", "hit", "hit"]
    assert all(a.complete and a.content == answers[0].content for a in answers)
    rows = settled_rows(cluster.database, key_id, len(answers))
    cached = {r.request_id: r.cached for r in rows}
    assert [cached[a.request_id] for a in answers] == [False, True, True, True]


# -- SIGKILL under load --------------------------------------------------------------------------


@dataclass
class Attempt:
    answer: Answer
    started: float
    took: float


async def client_loop(
    client: httpx.AsyncClient,
    cluster: Cluster,
    key: str,
    name: str,
    stop: asyncio.Event,
    attempts: list[Attempt],
) -> None:
    """Requests one after another until told to stop; a failed one is sent again (new request
    id) through nginx, up to 5 times, 0.1 s apart."""
    number = 0
    while not stop.is_set():
        number += 1
        body = {**CHAT, "model": "scripted", "stream": number % 2 == 0}
        for attempt in range(5):
            started = time.monotonic()
            request_id = f"{name}-{number}-{attempt}"
            answer = await post(client, cluster.url, key, body, request_id, headers=NO_STORE)
            attempts.append(Attempt(answer, started, time.monotonic() - started))
            if answer.complete:
                break
            await asyncio.sleep(0.1)


def test_a_replica_killed_under_load_loses_no_usage(
    cluster: Cluster, start_hearth: StartHearth
) -> None:
    """The third replica is replaced by one that writes usage only every 60 s (its flush and
    its key refresh, which flushes too), so everything it answers is only in its journal when it
    dies: the test then fails without the replay, not one time in N. Six clients send to the
    scripted upstream (0.2 s an answer, half of them streamed) through nginx; the replica gets
    SIGKILL mid-load. Every client request ends (no hang), the failed attempts are retried
    through nginx and succeed elsewhere, and once the replica is restarted on its data folder,
    every answer a client saw complete has exactly one usage row; no request id has two."""
    record, key = create_key(cluster.database, "kill")
    cluster.keys["kill"] = (record.id, key)
    old = cluster.replicas[2]
    env = {"TEST_ADMIN_KEY": ADMIN_KEY}
    slow_flush = cluster.configs.write("victim", flush_s=60, refresh_s=60)
    victim = start_hearth("--config", str(slow_flush), env=env)
    cluster.replicas[2] = victim
    cluster.balancer.reconfigure([r.port for r in cluster.replicas])
    old.stop()
    wait_key_status([r.base_url for r in cluster.replicas], key, 200, REFRESH_S + 3)
    cluster.upstream.set_default("scripted", "slow:0.2")
    attempts: list[Attempt] = []

    async def load() -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=15) as client:
            clients = [
                asyncio.create_task(client_loop(client, cluster, key, f"c{i}", stop, attempts))
                for i in range(6)
            ]
            await asyncio.sleep(2.0)
            os.kill(victim.proc.pid, signal.SIGKILL)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), timeout=30)  # none hangs

    try:
        asyncio.run(load())
    finally:
        cluster.upstream.set_default("scripted", "ok")
    victim.proc.wait(timeout=10)

    ok = [a.answer for a in attempts if a.answer.complete]
    failed = [a.answer for a in attempts if not a.answer.complete]
    assert failed, "the replica died with requests in flight"
    # 0: the connection broke (a stream cut, nginx closing); 502: nginx's answer for a POST the
    # replica had taken when it died (never resent: it may have been answered and billed).
    assert {a.status for a in failed} <= {0, 502}, Counter(a.status for a in failed)
    assert max(a.took for a in attempts) < 15
    logical = {a.answer.request_id.rsplit("-", 1)[0] for a in attempts}
    assert {a.request_id.rsplit("-", 1)[0] for a in ok} == logical, "every request ended well"
    on_victim = {a.request_id for a in ok if a.upstream == victim.port}
    assert on_victim, "the victim answered some before it died"

    # What the survivors answered arrives; what the victim answered is only in its journal.
    wanted = {a.request_id for a in ok}
    wait_for(
        lambda: (
            wanted - on_victim <= {r.request_id for r in usage_rows(cluster.database, record.id)}
        ),
        10,
        "the survivors' rows",
    )
    assert not on_victim & {r.request_id for r in usage_rows(cluster.database, record.id)}

    restarted = HearthServer(
        victim.data_dir, victim.env, ["--config", str(cluster.configs.write("r2"))]
    )
    cluster.replicas[2] = restarted
    restarted.wait_ready()
    assert "rows recovered from the journal" in restarted.log()
    rows = settled_rows(cluster.database, record.id, len(wanted))
    ids = Counter(r.request_id for r in rows)
    assert ids.most_common(1)[0][1] == 1, "a request counted twice"
    assert wanted <= set(ids), wanted - set(ids)
    # A row beyond those: an attempt the victim finished (and journaled) as it died, whose
    # answer never reached the client.
    assert set(ids) - wanted <= {a.request_id for a in failed}
    assert all(r.status == 200 for r in rows if r.request_id in wanted)
