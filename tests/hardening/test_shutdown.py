"""Stopping without loss (a CI fault scenario): SIGTERM with long streams in flight lets short
answers finish, ends every stream with `[DONE]` (complete, or an error event first once the
drain time runs out), and writes one usage row per request with what the client got; a SIGKILL
loses no usage of what was already answered (the journal is replayed at the next start)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from support.engine_probe import usage_rows
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

MODEL = "gemma-3-270m"


def _stream(
    server: HearthServer, max_tokens: int, lines: list[str], started: threading.Event
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    try:
        with httpx.stream(
            "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    lines.append(line[6:])
                    started.set()
    except httpx.HTTPError as exc:
        lines.append(f"transport error: {exc!r}")


def test_sigterm_drains_then_ends_every_stream(start_hearth: StartHearth) -> None:
    server = start_hearth(env={"HEARTH_SHUTDOWN_DRAIN": "8"})
    runs = [(1500, [], threading.Event()) for _ in range(3)]  # cut by the drain limit
    runs += [(10, [], threading.Event()) for _ in range(2)]  # finish within it
    threads = [threading.Thread(target=_stream, args=(server, *run)) for run in runs]
    for thread in threads:
        thread.start()
    for _, _, started in runs:
        assert started.wait(60)
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=60)
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)

    completed = 0
    for max_tokens, lines, _ in runs:
        assert lines and lines[-1] == "[DONE]", lines[-3:]
        last = json.loads(lines[-2])
        if max_tokens == 1500:
            assert last["error"]["code"] == "shutting_down", lines[-3:]
        else:
            assert "error" not in last, lines[-3:]
            completed += 1
    rows = usage_rows(server)
    assert len(rows) == len(runs), rows
    assert sum(1 for row in rows if row["status"] == 200) == completed == 2
    assert sum(1 for row in rows if row["status"] == 503) == 3


def test_sigkill_loses_no_usage_of_answered_requests(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text(
        "preload: []\nusage: {flush_interval: 3600}\nauth: {refresh_interval: 3600}\n"
        f"deployments:\n  journal:\n    url: {upstream.url('journal')}\n"
    )
    server = start_hearth("--config", str(config))
    answered = 0
    for _ in range(40):
        reply = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "journal", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=10,
        )
        assert reply.status_code == 200
        answered += 1
    os.kill(server.proc.pid, signal.SIGKILL)  # nothing was flushed: an hour-long interval
    server.proc.wait(timeout=10)
    assert usage_rows(server) == []

    again = HearthServer(server.data_dir, server.env, ["--config", str(config)])
    try:
        again.wait_ready()
        deadline = time.monotonic() + 10
        while len(usage_rows(again)) < answered and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(usage_rows(again)) == answered
    finally:
        again.stop()
    # Recovered once: a later start finds nothing left to replay, and writes no duplicates.
    third = HearthServer(server.data_dir, server.env, ["--config", str(config)])
    try:
        third.wait_ready()
        assert len(usage_rows(third)) == answered
    finally:
        third.stop()
