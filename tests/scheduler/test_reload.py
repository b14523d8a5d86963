"""Reloading the settings while serving: an engine-affecting change reloads that model once;
anything else applies without touching the engine; a bad file changes nothing."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.hearth_server import HearthServer, StartHearth

SECOND = "gemma-small"


def config_text(parallel: int, max_tokens: int, extra: str = "") -> str:
    return (
        f"models:\n  {SECOND}:\n    model: gemma-3-270m\n    parallel: {parallel}\n"
        f"    ctx_size: 2048\n    keep_alive: -1\n"
        f"    defaults: {{max_tokens: {max_tokens}}}\n{extra}"
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hearth.yaml"
    path.write_text(config_text(parallel=2, max_tokens=3))
    return path


@pytest.fixture
def server(start_hearth: StartHearth, config: Path) -> HearthServer:
    return start_hearth("--config", str(config))


def second_engine(server: HearthServer) -> tuple[int, list[str]]:
    answer = httpx.get(f"{server.base_url}/admin/models/loaded", timeout=10).json()
    pid = {m["name"]: m["pid"] for m in answer["data"]}[SECOND]
    return pid, Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def tokens(server: HearthServer) -> int:
    reply = server.openai().chat.completions.create(
        model=SECOND,
        messages=[{"role": "user", "content": "Tell a story."}],
        extra_body={"ignore_eos": True},
    )
    assert reply.usage is not None
    return reply.usage.completion_tokens


def reload(server: HearthServer) -> httpx.Response:
    return httpx.post(f"{server.base_url}/admin/reload", timeout=120)


def test_changes_apply_with_as_few_reloads_as_possible(server: HearthServer, config: Path) -> None:
    assert tokens(server) == 3
    pid, _ = second_engine(server)

    config.write_text(config_text(parallel=2, max_tokens=4))
    answer: dict[str, Any] = reload(server).json()
    assert answer["models"] == {"gemma-3-270m": "kept", SECOND: "kept"}
    assert second_engine(server)[0] == pid  # a request default is not a reason to reload
    assert tokens(server) == 4

    config.write_text(config_text(parallel=3, max_tokens=4))
    assert reload(server).json()["models"][SECOND] == "reloaded"
    assert tokens(server) == 4
    new_pid, argv = second_engine(server)
    assert new_pid != pid
    assert argv[argv.index("--parallel") + 1] == "3"

    assert reload(server).json()["models"][SECOND] == "kept"  # once, not on every reload
    assert second_engine(server)[0] == new_pid


def test_a_bad_file_changes_nothing(server: HearthServer, config: Path) -> None:
    tokens(server)
    pid, _ = second_engine(server)
    config.write_text(config_text(parallel=5, max_tokens=4, extra="prot: 1\n"))
    response = reload(server)
    assert response.status_code == 400
    assert "unknown setting 'prot'" in response.json()["error"]["message"]
    assert second_engine(server)[0] == pid
    assert tokens(server) == 3


def test_sighup_reloads(server: HearthServer, config: Path) -> None:
    tokens(server)
    pid, _ = second_engine(server)
    config.write_text(config_text(parallel=1, max_tokens=3))
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            new_pid, argv = second_engine(server)
        except (KeyError, FileNotFoundError):
            new_pid, argv = pid, []  # between unload and reload
        if new_pid != pid and argv:
            break
        time.sleep(0.2)
    assert argv[argv.index("--parallel") + 1] == "1"
    assert tokens(server) == 3
