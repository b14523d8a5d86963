"""Budget events: once per threshold and period across replicas (two watchers on one real
database, SQLite and PostgreSQL) and restarts; delivered to a real HTTP receiver on loopback,
signed, retried after a 500, exactly once; and requests not slowed while the receiver hangs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from hearth.auth.access import Access
from hearth.auth.budget_events import BudgetWatcher
from hearth.auth.budget_webhook import BudgetWebhook, sign
from hearth.auth.keys import KeyRecord
from hearth.auth.limits import MemoryCounter
from hearth.budget import Budget
from hearth.config import BudgetEventSettings, Settings
from hearth.db.engine import create_engine, migrate, utcnow
from hearth.db.schema import audit_log, budget_events
from support.access import (
    ADMIN_KEY,
    create_key,
    gateway_config,
    pg_database,
    query,
    reachable,
)
from support.hearth_server import StartHearth
from support.ports import free_port
from support.scripted_upstream import ScriptedUpstream

SECRET = "whsec-test-7f3a9c"


class Receiver:
    """A webhook receiver on loopback: answers each POST with the next planned status (then
    200), or holds it for `hang` seconds; keeps what it received."""

    def __init__(
        self, plan: list[int] | None = None, hang: float = 0.0, port: int | None = None
    ) -> None:
        self.plan = list(plan or [])
        self.hang = hang
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.hanging = threading.Event()
        self.port = port or free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = receiver.plan.pop(0) if receiver.plan else 200
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append((headers, body, status))
                if receiver.hang:
                    receiver.hanging.set()
                    time.sleep(receiver.hang)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/hearth"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, status in self.received if status == 200]


def verified(headers: dict[str, str], body: bytes) -> bool:
    """Check the signature as a receiver would: HMAC-SHA256 over '<timestamp>.<body>'."""
    timestamp = headers["x-hearth-timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    given = headers["x-hearth-signature"].removeprefix("sha256=")
    return (
        hmac.compare_digest(expected.hexdigest(), given) and abs(time.time() - int(timestamp)) < 300
    )


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.05)


# ---- once per threshold, across replicas and restarts (real databases) ------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hearth.db'}"
        return
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    with pg_database() as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=database_url))
    await migrate(engine)
    yield engine
    await engine.dispose()


ALICE = KeyRecord(
    id="a1b2c3d4",
    name="alice",
    prefix="hk_a1b2c3d4",
    hash="0" * 64,
    team="blue",
    budget=Budget.parse("1000tokens/day"),
)


def replica(engine: AsyncEngine, settings: BudgetEventSettings) -> tuple[Access, BudgetWatcher]:
    """One gateway replica's view: its own spend in memory, the shared database."""
    access = Access(Settings(auth={"teams": {"blue": {"budget": "$10/month"}}}), MemoryCounter())
    access.load([ALICE])
    return access, BudgetWatcher(engine, access, settings)


async def events(engine: AsyncEngine) -> list[tuple[str, int]]:
    query = select(budget_events.c.subject, budget_events.c.threshold).order_by(budget_events.c.id)
    async with engine.connect() as conn:
        return [(r.subject, r.threshold) for r in (await conn.execute(query)).all()]


async def audited(engine: AsyncEngine) -> list[tuple[str, str, dict[str, Any]]]:
    query = select(audit_log).where(audit_log.c.action == "budget.threshold")
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(audit_log.c.id))).all()
    return [(r.actor, r.target, json.loads(r.detail)) for r in rows]


async def test_each_threshold_emits_once_across_replicas_and_restarts(engine: AsyncEngine) -> None:
    settings = BudgetEventSettings(teams={"blue": [90]}, keys={"hk_other": [10]})
    one, first = replica(engine, settings)
    two, second = replica(engine, settings)
    assert first.thresholds("key:a1b2c3d4", {ALICE.id: ALICE}) == [50, 80, 100]
    assert first.thresholds("team:blue", {}) == [90]

    for access in (one, two):  # both replicas see alice at 60% (the database's totals)
        access.spend.add(["key:a1b2c3d4", "team:blue"], 600, 8.0)
    assert await asyncio.gather(first.check(), second.check()) in ([1, 0], [0, 1])
    assert await events(engine) == [("key:a1b2c3d4", 50)]  # 8 of $10 is 80%, under 90
    assert await first.check() == 0 and await second.check() == 0

    two.spend.add(["key:a1b2c3d4", "team:blue"], 450, 1.5)  # 105% and 95%
    assert await second.check() == 3
    one.spend.add(["key:a1b2c3d4", "team:blue"], 450, 1.5)
    assert await first.check() == 0  # the other replica emitted them
    emitted = await events(engine)
    assert sorted(emitted) == [
        ("key:a1b2c3d4", 50),
        ("key:a1b2c3d4", 80),
        ("key:a1b2c3d4", 100),
        ("team:blue", 90),
    ]
    entries = await audited(engine)
    assert [(actor, target, d["threshold"]) for actor, target, d in entries] == [
        ("budget", subject, threshold) for subject, threshold in emitted
    ]
    assert entries[0][2]["budget"] == "1000tokens/day"

    restarted, third = replica(engine, settings)  # a new process: nothing in memory
    restarted.spend.add(["key:a1b2c3d4", "team:blue"], 2000, 20.0)
    await third.start()
    assert third.due(utcnow()) == []  # known from the database at start
    assert await third.check() == 0
    await third.aclose()
    assert len(await events(engine)) == 4


async def test_the_webhook_body_names_the_key_by_prefix_and_is_signed(
    engine: AsyncEngine,
) -> None:
    access, watcher = replica(engine, BudgetEventSettings(thresholds=[50]))
    access.spend.add(["key:a1b2c3d4"], 500, 0.0)
    watcher.settings = BudgetEventSettings(
        thresholds=[50], webhook={"url": "http://127.0.0.1:9/x", "secret": SECRET}
    )
    assert await watcher.check() == 1
    async with engine.connect() as conn:
        (payload,) = (await conn.execute(select(budget_events.c.payload))).scalars().all()
    body = json.loads(payload)
    assert body["type"] == "budget.threshold_reached"
    assert body["subject"] == {"kind": "key", "name": "alice", "prefix": "hk_a1b2c3d4"} | {
        "team": "blue"
    }
    assert (body["threshold"], body["used"], body["spent"]) == (50, 0.5, 500)
    assert body["budget"] == {"amount": 1000, "unit": "tokens", "period": "day"} | {
        "text": "1000tokens/day"
    }
    assert body["id"].startswith("key:a1b2c3d4/day/")
    assert "0" * 64 not in payload  # never the key's hash
    assert (
        sign(SECRET, 1700000000, b"{}")
        == "sha256=" + hmac.new(SECRET.encode(), b"1700000000.{}", hashlib.sha256).hexdigest()
    )


async def test_two_senders_deliver_each_event_once_and_retry_after_a_500(
    engine: AsyncEngine,
) -> None:
    with Receiver(plan=[500]) as receiver:
        hook = {"url": receiver.url, "secret": SECRET, "backoff": 0.05}
        settings = BudgetEventSettings(webhook=hook)
        access, watcher = replica(engine, settings)
        access.spend.add(["key:a1b2c3d4"], 900, 0.0)  # 50% and 80%
        assert await watcher.check() == 2
        senders = [BudgetWebhook(engine, settings.webhook) for _ in range(2)]  # type: ignore[arg-type]
        try:
            for _ in range(40):
                await asyncio.gather(*(s.deliver_due() for s in senders))
                if len(receiver.delivered()) == 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            await asyncio.gather(*(s.deliver_due() for s in senders))
        finally:
            for sender in senders:
                await sender.aclose()
    statuses = [status for _, _, status in receiver.received]
    assert statuses == [500, 200, 200]  # the first try failed, and was tried again
    first_try = json.loads(receiver.received[0][1])["id"]
    assert sorted(e["threshold"] for e in receiver.delivered()) == [50, 80]
    assert first_try in [e["id"] for e in receiver.delivered()]
    for headers, body, _ in receiver.received:
        assert verified(headers, body)
        assert headers["x-hearth-event-id"] == json.loads(body)["id"]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(budget_events))).all()
    assert all(r.delivered_at is not None and r.next_attempt is None for r in rows)
    assert sorted(r.attempts for r in rows) == [1, 2]


async def test_a_receiver_that_is_down_gets_the_event_when_it_is_back(
    engine: AsyncEngine,
) -> None:
    port = free_port()
    hook = {"url": f"http://127.0.0.1:{port}/h", "secret": SECRET, "backoff": 0.05}
    settings = BudgetEventSettings(thresholds=[50], webhook=hook)
    access, watcher = replica(engine, settings)
    access.spend.add(["key:a1b2c3d4"], 500, 0.0)
    await watcher.check()
    sender = BudgetWebhook(engine, settings.webhook)  # type: ignore[arg-type]
    try:
        for _ in range(3):  # nothing listens: refused, and kept for later
            assert await sender.deliver_due() == 0
            await asyncio.sleep(0.25)
        async with engine.connect() as conn:
            row = (await conn.execute(select(budget_events))).one()
        assert row.delivered_at is None and row.next_attempt is not None
        assert row.last_error == "ConnectError" and SECRET not in row.last_error
        with Receiver(port=port) as receiver:
            await asyncio.sleep(2)  # past the backoff (0.05 s doubled per try)
            assert await sender.deliver_due() == 1
        assert [e["threshold"] for e in receiver.delivered()] == [50]
    finally:
        await sender.aclose()


# ---- through a running gateway ------------------------------------------------------------------


def budget_gateway(
    tmp_path: Path, upstream: ScriptedUpstream, receiver: Receiver, extra: str = ""
) -> tuple[Path, str]:
    database = f"sqlite:///{tmp_path / 'hearth.db'}"
    config = gateway_config(
        tmp_path / "hearth.yaml",
        upstream,
        database,
        {"fast": ""},
        "budgets:\n"
        "  check_interval: 0.1\n"
        f"  webhook: {{url: '{receiver.url}', secret: env:TEST_WEBHOOK_SECRET, backoff: 0.2,"
        " timeout: 30}\n" + extra,
    )
    return config, database


def chat(server_url: str, key: str) -> httpx.Response:
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{server_url}/v1/chat/completions", json=body, headers=headers, timeout=30)


ENV = {"TEST_ADMIN_KEY": ADMIN_KEY, "TEST_WEBHOOK_SECRET": SECRET}


def test_a_gateway_sends_each_threshold_once_signed_and_across_a_restart(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    with Receiver(plan=[500]) as receiver:
        config, database = budget_gateway(tmp_path, upstream, receiver)
        # 8 tokens a request (the scripted upstream's usage): 5 requests are 50%, 10 are 100%.
        _, key = create_key(database, "alice", budget=Budget.parse("80tokens/day"))
        server = start_hearth("--config", str(config), env=ENV)
        for _ in range(10):
            assert chat(server.base_url, key).status_code == 200
            time.sleep(0.15)  # spend crosses each threshold while the watcher looks
        assert chat(server.base_url, key).status_code == 429  # the budget is spent
        wait_for(lambda: len(receiver.delivered()) == 3)
        time.sleep(1.5)  # time for a duplicate, were there one
        assert [status for _, _, status in receiver.received] == [500, 200, 200, 200]
        assert sorted(e["threshold"] for e in receiver.delivered()) == [50, 80, 100]
        assert len({e["id"] for e in receiver.delivered()}) == 3
        assert all(verified(headers, body) for headers, body, _ in receiver.received)
        assert SECRET not in server.log()
        metrics = httpx.get(
            f"{server.base_url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        ).text
        assert 'hearth_budget_events_total{kind="key",threshold="80"} 1.0' in metrics
        assert 'hearth_budget_webhook_deliveries_total{outcome="failed"} 1.0' in metrics
        assert "hearth_budget_used_ratio{" in metrics
        server.stop()

        again = start_hearth("--config", str(config), env=ENV)  # the same database
        assert chat(again.base_url, key).status_code == 429
        time.sleep(1.5)
        assert len(receiver.received) == 4  # nothing emitted again
        again.stop()
    audit = query(
        database, "SELECT target, detail FROM audit_log WHERE action = 'budget.threshold'"
    )
    assert sorted(json.loads(detail)["threshold"] for _, detail in audit) == [50, 80, 100]


def test_requests_are_not_slowed_while_the_receiver_hangs(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    with Receiver(hang=20) as receiver:
        config, database = budget_gateway(tmp_path, upstream, receiver)
        _, alice = create_key(database, "alice", budget=Budget.parse("16tokens/day"))
        _, bob = create_key(database, "bob")
        server = start_hearth("--config", str(config), env=ENV)
        assert chat(server.base_url, alice).status_code == 200  # 50%: an event
        assert receiver.hanging.wait(10)  # the webhook's POST is being held
        started = time.monotonic()
        for _ in range(10):
            assert chat(server.base_url, bob).status_code == 200
        elapsed = time.monotonic() - started
        assert len(receiver.received) == 1  # still the one held POST
        # Ten answers while the receiver holds the webhook for 20 s: nothing waited on it.
        assert elapsed < 10, elapsed
        server.stop()
