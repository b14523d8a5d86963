"""Updating and rolling back a model while a real `hearth serve` serves it: a stream in flight
finishes on the old engine (drained, not killed) while new requests go to the new file; the old
revision stays servable as NAME@REV, and a weighted route sends requests to both revisions.

The model is the bundled Gemma 3 270M, served by the fake hub: its first revision is the file as
shipped, the second the same file with one letter of its `general.name` changed (a different
file, still a valid model)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from hearth.cli.main import cli
from hearth.models.bundled import bundled_model_path
from support.fake_hub import COMMIT, FakeHub
from support.hearth_server import HearthServer, StartHearth

REPO = "acme/gemma-GGUF"
FILE = "gemma-Q4_K_M.gguf"
NAME = f"{REPO}:Q4_K_M"
OLD = f"{NAME}@{COMMIT[:7]}"
STREAM_SECONDS = 30  # how long the stream in flight during the update should last


def second_revision(data: bytes) -> bytes:
    at = data.index(b"Gemma 3 270m")
    return data[:at] + b"Gemma 3 270M" + data[at + len(b"Gemma 3 270m") :]


def hearth(server: HearthServer, *args: str) -> str:
    result = CliRunner().invoke(
        cli, [*args, "--data-dir", str(server.data_dir)], env={"HEARTH_PORT": str(server.port)}
    )
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def engine_of(server: HearthServer, name: str) -> tuple[int, str]:
    """The pid of the engine serving `name` and the model file on its command line."""
    answer = httpx.get(f"{server.base_url}/admin/models/loaded", timeout=10).json()
    pid = {m["name"]: m["pid"] for m in answer["data"]}[name]
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return pid, argv[argv.index("--model") + 1]


def ask(server: HearthServer, model: str, tokens: int = 1) -> httpx.Response:
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": tokens,
            "ignore_eos": True,
        },
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response


def tokens_for(server: HearthServer, seconds: float) -> int:
    """About how many tokens the engine generates in `seconds` on this machine now (a shared
    CI runner may be 50 times slower than a free one)."""
    started = time.monotonic()
    ask(server, NAME, tokens=32)
    rate = 32 / (time.monotonic() - started)
    return max(60, min(1800, int(rate * seconds)))  # a slot holds 2048 tokens


class Stream(threading.Thread):
    """A long streamed answer, read event by event."""

    def __init__(self, server: HearthServer, tokens: int) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.tokens = tokens
        self.started = threading.Event()
        self.events: list[dict[str, Any]] = []
        self.failure: str | None = None

    def run(self) -> None:
        body = {
            "model": NAME,
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": self.tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
        url = f"{self.server.base_url}/v1/chat/completions"
        try:
            with httpx.stream("POST", url, json=body, timeout=300) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        self.events.append(json.loads(line[6:]))
                        self.started.set()
        except httpx.HTTPError as exc:
            self.failure = repr(exc)
        finally:
            self.started.set()


@pytest.fixture
def server(
    start_hearth: StartHearth,
    fake_hub: FakeHub,
    bundled_model_dir: Path,
    tmp_path: Path,
) -> HearthServer:
    fake_hub.add_file(REPO, FILE, bundled_model_path(bundled_model_dir))
    config = tmp_path / "hearth.yaml"
    config.write_text("keep_alive: -1\n")
    server = start_hearth("--config", str(config))
    hearth(server, "pull", NAME)
    httpx.post(f"{server.base_url}/admin/reload", timeout=60).raise_for_status()
    return server


@pytest.mark.timeout(600)  # two engines on a shared runner decode slowly
def test_an_update_drains_the_old_engine_and_a_route_serves_both_revisions(
    server: HearthServer, fake_hub: FakeHub, tmp_path: Path
) -> None:
    ask(server, NAME)
    old_pid, old_file = engine_of(server, NAME)
    assert old_file.endswith(f"/{COMMIT}/{FILE}")
    tokens = tokens_for(server, STREAM_SECONDS)
    commit = fake_hub.new_revision(REPO, {FILE: second_revision(fake_hub.repos[REPO][FILE].data)})
    # Another name pulled at the new revision first, so that the update finds the file there
    # and takes seconds, not the download's minute on a busy runner.
    hearth(server, "pull", f"{REPO}/{FILE}", "--name", "prefetched")

    stream = Stream(server, tokens)
    stream.start()
    assert stream.started.wait(120) and stream.failure is None
    said = hearth(server, "pull", "--update", NAME)
    assert f"now serves revision {commit[:7]}" in said and "has applied the change" in said

    # The stream goes on on the old engine while a new request starts the new one.
    assert not any("error" in event for event in stream.events), stream.events[-1]
    assert stream.is_alive(), f"the stream of {tokens} tokens ended before the update"
    assert old_pid in server.engine_pids()  # draining, not killed
    listed = httpx.get(f"{server.base_url}/admin/models/loaded").json()["draining"]
    assert [(m["name"], m["state"], m["pid"]) for m in listed] == [(NAME, "draining", old_pid)]
    assert "draining" in hearth(server, "ps")
    assert ask(server, NAME).headers["x-hearth-deployment"] == NAME
    new_pid, new_file = engine_of(server, NAME)
    assert new_pid != old_pid and new_file.endswith(f"/{commit}/{FILE}")

    stream.join(STREAM_SECONDS * 10)
    assert not stream.is_alive(), f"{len(stream.events)} events of {tokens} so far"
    assert stream.failure is None
    assert not any("error" in event for event in stream.events)
    assert stream.events[-1]["usage"]["completion_tokens"] == tokens
    finishes = [c["finish_reason"] for e in stream.events for c in e.get("choices", [])]
    assert finishes[-1] == "length"
    deadline = time.monotonic() + 30
    while old_pid in server.engine_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert old_pid not in server.engine_pids()  # stopped once its request finished

    # The old revision is a model of its own, listed, and a weighted route A/B-tests the two.
    listed = {m["id"] for m in httpx.get(f"{server.base_url}/v1/models", timeout=10).json()["data"]}
    assert {NAME, OLD, f"{NAME}@{commit[:7]}"} <= listed
    assert ask(server, f"{NAME}@{COMMIT[:12]}").headers["x-hearth-deployment"] == OLD
    assert engine_of(server, OLD)[1] == old_file
    config = tmp_path / "hearth.yaml"
    config.write_text(
        "keep_alive: -1\nroutes:\n  ab:\n    strategy: weighted\n    deployments:\n"
        f"      - {{deployment: '{NAME}@{commit[:10]}', weight: 1}}\n"
        f"      - {{deployment: '{NAME}@{COMMIT[:8]}', weight: 1}}\n"
    )
    httpx.post(f"{server.base_url}/admin/reload", timeout=60).raise_for_status()
    served = Counter(ask(server, "ab").headers["x-hearth-deployment"] for _ in range(12))
    assert set(served) == {NAME, OLD}, served

    # Rolling back points the name at the old file again.
    said = hearth(server, "rollback", NAME)
    assert f"now serves revision {COMMIT[:7]}" in said and "has applied the change" in said
    ask(server, NAME)
    assert engine_of(server, NAME)[1] == old_file
