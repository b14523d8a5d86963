"""Prompt caches that survive an unload (issue 15): a real `hearth serve` with the bundled model
saves its busiest llama-server slots when the model unloads and restores them when it loads
again, so a long conversation's next turn reuses its prefix; `hearth rm` deletes them.

The conversation runs on a copy of the bundled model (Ollama's /api/copy), since the bundled
model itself cannot be removed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from hearth.engines.prompt_cache import MANIFEST, path_component
from support.hearth_server import HearthServer, StartHearth

pytestmark = pytest.mark.engine

MODEL = "convo"
BOUND = 64 * 1024**2
CONFIG = f"""
preload: []
keep_alive: -1
engine: {{parallel: 2, ctx_size: 4096}}
prompt_cache_max: {BOUND}
"""
# About 1,500 tokens of text the model has to read; numbered, so no two sentences are alike.
PREFIX = " ".join(
    f"Note {i}: the {('red', 'green', 'blue', 'grey', 'amber')[i % 5]} lighthouse keeper counted "
    f"{i * 7} ships before dawn."
    for i in range(1, 84)
)


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> HearthServer:
    config = tmp_path_factory.mktemp("config") / "hearth.yaml"
    config.write_text(CONFIG)
    server = start_hearth("--config", str(config))
    copied = httpx.post(
        f"{server.base_url}/api/copy",
        json={"source": "gemma-3-270m", "destination": MODEL},
        timeout=30,
    )
    assert copied.status_code == 200, copied.text
    return server


def chat(server: HearthServer, messages: list[dict[str, str]]) -> dict[str, Any]:
    # No seed: with one, the engine is asked not to reuse its prompt cache.
    answer = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": 4, "temperature": 0},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def cached_tokens(answer: dict[str, Any]) -> int:
    return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])


def unload(server: HearthServer) -> None:
    response = httpx.post(f"{server.base_url}/admin/models/{MODEL}/unload", timeout=60)
    assert response.status_code == 200, response.text


def test_next_turn_after_a_reload_reuses_the_restored_prefix(server: HearthServer) -> None:
    first = [{"role": "user", "content": f"{PREFIX}\n\nWhich colour came first?"}]
    opening = chat(server, first)
    assert opening["usage"]["prompt_tokens"] > 1300
    reply = opening["choices"][0]["message"]["content"]

    unload(server)
    folder = server.data_dir / "prompt-cache" / path_component(MODEL) / path_component(MODEL)
    manifest = json.loads((folder / MANIFEST).read_text())
    [saved] = manifest["slots"]  # one slot was used; the idle one held nothing worth saving
    assert saved["tokens"] >= opening["usage"]["prompt_tokens"]
    files = [p for p in folder.iterdir() if p.name != MANIFEST]
    assert [p.name for p in files] == [saved["file"]]
    assert 0 < files[0].stat().st_size == saved["bytes"] <= BOUND

    # The model loads again for the next turn, and restores the slot before it is asked.
    follow_up = [
        *first,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And which came last?"},
    ]
    answer = chat(server, follow_up)
    assert cached_tokens(answer) >= opening["usage"]["prompt_tokens"] - 8
    assert answer["usage"]["prompt_tokens"] - cached_tokens(answer) < 64

    # `hearth rm` deletes the model's saved caches with it.
    unload(server)
    assert len(list(folder.iterdir())) == 2  # the manifest and the slot saved again
    removed = subprocess.run(
        [sys.executable, "-m", "hearth", "rm", MODEL, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        env=server.env,
        timeout=60,
    )
    assert removed.returncode == 0, removed.stderr
    assert not (server.data_dir / "prompt-cache" / path_component(MODEL)).exists()
