"""Looking at a `hearth serve`'s llama-server directly, as tests must to prove what the engine
did (users never need its address): its URL from its command line, its busy slots, and the
usage rows Hearth wrote to its SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from support.hearth_server import HearthServer


def engine_url(server: HearthServer) -> str:
    (pid,) = server.engine_pids()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    port = argv[argv.index(b"--port") + 1].decode()
    return f"http://127.0.0.1:{port}"


def slots_busy(url: str) -> int:
    slots = httpx.get(f"{url}/slots", timeout=5).json()
    return sum(1 for slot in slots if slot.get("is_processing"))


def tokens_held(url: str) -> int:
    """The most tokens any slot holds in its cache: its last prompt and what was generated for
    it (kept once the slot is idle, unlike the slot's decode counters)."""
    slots = httpx.get(f"{url}/slots", timeout=5).json()
    return max(int(slot.get("n_prompt_tokens", 0)) for slot in slots)


def usage_rows(server: HearthServer) -> list[dict[str, Any]]:
    """Every usage row in the server's SQLite database (written by its flush or at shutdown)."""
    with sqlite3.connect(server.data_dir / "hearth.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM usage ORDER BY time")]
