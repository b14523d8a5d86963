"""Loading on demand, keep_alive and unloading, through a real `hearth serve` with real engines.

The second model is a second registration of the bundled GGUF under another name, with other
engine settings, so two engines run side by side.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from support.hearth_server import HearthServer, StartHearth
from support.waiting import wait_for

SECOND = "gemma-small"
CONFIG = f"""
models:
  {SECOND}:
    model: gemma-3-270m
    parallel: 2
    ctx_size: 2048
    keep_alive: 3s
    aliases: [gpt-4o-mini]
    defaults: {{max_tokens: 3, temperature: 0}}
"""


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> HearthServer:
    config = tmp_path_factory.mktemp("config") / "hearth.yaml"
    config.write_text(CONFIG)
    return start_hearth("--config", str(config))


@pytest.fixture(autouse=True)
def second_model_unloaded(server: HearthServer) -> None:
    httpx.post(f"{server.base_url}/admin/models/{SECOND}/unload", timeout=30)
    assert SECOND not in loaded(server)


def loaded(server: HearthServer) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{server.base_url}/admin/models/loaded", timeout=10).json()
    return {model["name"]: model for model in answer["data"]}


def ask(server: HearthServer, model: str, **extra: Any) -> str:
    reply = server.openai().chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        extra_body=extra or None,
    )
    return reply.model


def engine_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def starts_logged(server: HearthServer, model: str) -> int:
    log = server.data_dir / "logs" / f"{model}.log"
    return log.read_text().count(" starting: ") if log.exists() else 0


def test_two_models_run_side_by_side_with_their_own_settings(server: HearthServer) -> None:
    assert ask(server, SECOND) == SECOND
    models = loaded(server)
    assert set(models) == {"gemma-3-270m", SECOND}
    assert all(m["state"] == "ready" for m in models.values())
    first, second = (engine_argv(models[name]["pid"]) for name in ("gemma-3-270m", SECOND))
    assert first[first.index("--parallel") + 1] == "8"
    assert second[second.index("--parallel") + 1] == "2"
    assert second[second.index("--ctx-size") + 1] == "2048"
    # The alias reaches the same engine.
    assert ask(server, "gpt-4o-mini") == SECOND
    assert loaded(server)[SECOND]["pid"] == models[SECOND]["pid"]


def test_models_lists_every_name_loaded_or_not(server: HearthServer) -> None:
    cards = {m.id: m for m in server.openai().models.list().data}
    assert set(cards) == {"gemma-3-270m", "all-minilm-l6-v2", SECOND, "gpt-4o-mini"}
    assert cards[SECOND].model_extra["state"] == "not_loaded"  # type: ignore[index]
    assert cards["gpt-4o-mini"].model_extra["alias_of"] == SECOND  # type: ignore[index]


def test_keep_alive_expiry_unloads_an_idle_model(server: HearthServer) -> None:
    ask(server, SECOND)
    pid = loaded(server)[SECOND]["pid"]
    assert 0 < loaded(server)[SECOND]["expires_in_s"] <= 3
    wait_for(lambda: SECOND not in loaded(server), 20, "the keep_alive unload")
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the engine to exit")
    # The preloaded model is kept.
    assert loaded(server)["gemma-3-270m"]["keep_alive_s"] < 0


def test_keep_alive_zero_in_a_request_unloads_right_after_it(server: HearthServer) -> None:
    ask(server, SECOND, keep_alive=0)
    wait_for(lambda: SECOND not in loaded(server), 10, "the unload after the request")


def test_a_bad_keep_alive_is_a_400(server: HearthServer) -> None:
    with pytest.raises(openai.BadRequestError, match="keep_alive"):
        ask(server, SECOND, keep_alive="soon")


async def test_ten_concurrent_first_requests_share_one_load(server: HearthServer) -> None:
    before = starts_logged(server, SECOND)
    llm = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    try:
        replies = await asyncio.gather(
            *(
                llm.chat.completions.create(
                    model=SECOND, messages=[{"role": "user", "content": f"#{i}"}], max_tokens=2
                )
                for i in range(10)
            )
        )
    finally:
        await llm.close()
    assert [r.model for r in replies] == [SECOND] * 10
    assert starts_logged(server, SECOND) == before + 1


def test_ps_and_unload_commands(server: HearthServer) -> None:
    ask(server, SECOND, keep_alive=-1)  # kept while the slow CLI subprocesses run
    env = {**os.environ, "HEARTH_PORT": str(server.port), "COLUMNS": "200"}

    def hearth(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hearth", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    listing = hearth("ps")
    assert listing.returncode == 0, listing.stderr
    assert SECOND in listing.stdout and "gemma-3-270m" in listing.stdout
    assert "never" in listing.stdout  # neither model expires

    assert hearth("unload", "gpt-4o-mini").stdout.strip() == f"unloaded {SECOND}"
    assert SECOND not in loaded(server)
    again = hearth("unload", SECOND)
    assert again.returncode == 1
    assert "is not loaded" in again.stderr


def test_model_defaults_fill_in_what_the_request_leaves_out(server: HearthServer) -> None:
    def completion_tokens(**fields: Any) -> int:
        reply = server.openai().chat.completions.create(
            model=SECOND,
            messages=[{"role": "user", "content": "Tell a story."}],
            extra_body={"ignore_eos": True},
            **fields,
        )
        assert reply.usage is not None
        return reply.usage.completion_tokens

    assert completion_tokens() == 3  # max_tokens from the model's defaults
    assert completion_tokens(max_tokens=5) == 5  # the request wins


def test_slots_and_priority_header(server: HearthServer) -> None:
    ask(server, SECOND)
    model = loaded(server)[SECOND]
    assert (model["slots"], model["slots_busy"], model["queued"]) == (2, 0, 0)
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": SECOND, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
        headers={"x-hearth-priority": "urgent"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "x-hearth-priority" in response.json()["error"]["message"]
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": SECOND, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
        headers={"x-hearth-priority": "10"},
        timeout=30,
    )
    assert response.status_code == 200
