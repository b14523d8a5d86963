"""Helpers for the access and accounting tests: real databases (a SQLite file, or a PostgreSQL
database created for the test and dropped after), keys made straight in them, and gateway
configs whose deployments are a scripted upstream."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from hearth.auth.keys import KeyRecord
from hearth.auth.store import KeyStore
from hearth.config import Settings
from hearth.db.engine import create_engine, migrate
from support.hearth_server import HearthServer
from support.scripted_upstream import ScriptedUpstream

PG_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN_KEY = "admin-secret-for-tests-5e1c"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _pg(statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (its URL); dropped afterwards, connections or not."""
    name = f"hearth_test_{uuid.uuid4().hex[:12]}"
    _pg(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        drop_pg_database(name)


def block_pg_database(name_or_url: str, blocked: bool) -> None:
    """An outage of one database: refuse new connections and end the open ones (or undo it)."""
    name = name_or_url.rsplit("/", 1)[-1]
    _pg(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'false' if blocked else 'true'}")
    if blocked:
        _pg(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


def drop_pg_database(name_or_url: str) -> None:
    name = name_or_url.rsplit("/", 1)[-1]
    _pg(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_db(database_url: str, work: Any) -> Any:
    """Run `work(engine)` against a migrated database."""

    async def run() -> Any:
        engine = create_engine(Settings(database_url=database_url))
        try:
            await migrate(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def create_key(database_url: str, name: str = "test", **options: Any) -> tuple[KeyRecord, str]:
    result: tuple[KeyRecord, str] = run_db(
        database_url, lambda engine: KeyStore(engine).create(name, **options)
    )
    return result


def query(database_url: str, sql: str) -> list[Any]:
    async def work(engine: Any) -> list[Any]:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql))).all())

    rows: list[Any] = run_db(database_url, work)
    return rows


def gateway_config(
    path: Path,
    upstream: ScriptedUpstream,
    database_url: str,
    deployments: dict[str, str],
    extra: str = "",
) -> Path:
    """A gateway with no local model, fast refresh and flush, and the admin key from
    $TEST_ADMIN_KEY. `deployments`: name → extra YAML flow mapping items ('' for none)."""
    lines = [
        "preload: []",
        f"database_url: '{database_url}'",
        "routing: {retries: 0, health_check_interval: 0}",
        "auth:",
        "  admin_key: env:TEST_ADMIN_KEY",
        "  refresh_interval: 0.5",
        "usage: {flush_interval: 0.2}",
        "deployments:",
    ]
    for name, options in deployments.items():
        more = f", {options}" if options else ""
        lines.append(f"  {name}: {{url: '{upstream.url(name)}'{more}}}")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def hearth_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    return subprocess.run(
        [sys.executable, "-m", "hearth", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
    )


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def chat(
    gateway: HearthServer, key: str | None, model: str = "free", **headers: str
) -> httpx.Response:
    if key is not None:
        headers.setdefault("authorization", f"Bearer {key}")
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": model, **CHAT},
        headers=headers,
        timeout=10,
    )


def admin(gateway: HearthServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.request(method, f"{gateway.base_url}{path}", headers=headers, timeout=10, **kwargs)
