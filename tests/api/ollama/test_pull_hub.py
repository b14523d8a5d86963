"""Ollama's POST /api/pull against a fake hub through a real `hearth serve`: without a tag the
largest quantization that fits the server's memory budget (and why, as a status line), a name in
Ollama's library style answered with the hub repositories a search finds, and a hub that fails or
breaks off a download a 503 naming the cause (not a 400)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hearth.models.gguf_info import estimate_memory, read_gguf_info
from support.fake_hub import FakeHub, add_quantized_repo
from support.hearth_server import HearthServer, StartHearth

REPO = "acme/Tiny-8B-GGUF"
CTX, SLOTS = 4096, 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hub-files")


@pytest.fixture(scope="module")
def hub(folder: Path) -> Iterator[FakeHub]:
    hub = FakeHub()
    add_quantized_repo(
        hub, REPO, folder, {"Q4_K_M": 1000, "Q5_K_M": 2000, "Q8_0": 4000}, downloads=5
    )
    add_quantized_repo(hub, "other/tiny-chat-GGUF", folder, {"Q4_0": 10}, downloads=9)
    add_quantized_repo(hub, "acme/broken-GGUF", folder, {"Q4_0": 10})
    hub.start()
    yield hub
    hub.stop()


def need(folder: Path, tag: str) -> int:
    path = folder / REPO / f"Tiny-8B-{tag}.gguf"
    return estimate_memory(read_gguf_info(path), path.stat().st_size, CTX, SLOTS)


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, hub: FakeHub, folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    config: Path = tmp_path_factory.mktemp("pull-hub") / "hearth.yaml"
    config.write_text("preload: []\n")
    budget = (need(folder, "Q5_K_M") + need(folder, "Q8_0")) // 2  # Q5_K_M fits, Q8_0 does not
    env = {
        "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),
        "HF_TOKEN": "", "HF_HUB_OFFLINE": "0", "HEARTH_MEMORY_BUDGET": str(budget),
        "HEARTH_ENGINE__CTX_SIZE": str(CTX), "HEARTH_ENGINE__PARALLEL": str(SLOTS),
    }  # fmt: skip
    return start_hearth("--config", str(config), env=env)


def post_pull(server: HearthServer, model: str, stream: bool) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/api/pull", json={"model": model, "stream": stream}, timeout=60
    )


def test_a_pull_without_a_tag_takes_the_largest_that_fits(server: HearthServer) -> None:
    answer = post_pull(server, f"hf.co/{REPO}", stream=True)
    assert answer.status_code == 200, answer.text
    statuses = [json.loads(line).get("status", "") for line in answer.text.splitlines()]
    reason = next(s for s in statuses if "largest that fits" in s)
    assert reason.startswith("Q5_K_M (") and f"at ctx {CTX} x {SLOTS} slots" in reason
    assert statuses[-1] == "success"
    tags = httpx.get(f"{server.base_url}/api/tags").json()["models"]
    assert any(m["name"] == f"{REPO}:Q5_K_M" for m in tags)


def test_a_library_style_name_is_answered_with_hub_repositories(server: HearthServer) -> None:
    answer = post_pull(server, "tiny:8b", stream=False)
    assert answer.status_code == 404, answer.text
    message = answer.json()["error"]
    assert f"did you mean {REPO}, other/tiny-chat-GGUF" in message


def test_a_hub_that_fails_is_a_503_naming_it(server: HearthServer, hub: FakeHub) -> None:
    hub.failing = 503
    try:
        answer = post_pull(server, "acme/broken-GGUF", stream=False)
    finally:
        hub.failing = None
    assert answer.status_code == 503, answer.text
    assert f"the hub at {hub.endpoint} failed to list acme/broken-GGUF (503)" in answer.text


def test_a_connection_cut_while_pulling_is_a_503(server: HearthServer, hub: FakeHub) -> None:
    hub.cut_after["broken-Q4_0.gguf"] = 10
    hub.cuts["broken-Q4_0.gguf"] = 100  # every attempt
    answer = post_pull(server, "acme/broken-GGUF", stream=False)
    assert answer.status_code == 503, answer.text
    assert "the download of broken-Q4_0.gguf was interrupted" in answer.text
