"""The memory budget: eviction of idle models, waiting with a bounded queue, models too large.

The budget is set between the two models' estimates so that only one fits at a time: the bundled
model (parallel 8, ctx 16384: ~630 MB estimated) and a second registration (parallel 2, ctx 2048:
~360 MB).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import openai
import pytest

from support.hearth_server import HearthServer, StartHearth

BUNDLED, SECOND, HUGE = "gemma-3-270m", "gemma-small", "gemma-huge"
CONFIG = f"""
memory_budget: 800MB
load_queue_size: 0
models:
  {SECOND}:
    model: gemma-3-270m
    parallel: 2
    ctx_size: 2048
  {HUGE}:
    model: gemma-3-270m
    ctx_size: 1048576
"""


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> HearthServer:
    config = tmp_path_factory.mktemp("config") / "hearth.yaml"
    config.write_text(CONFIG)
    return start_hearth("--config", str(config))


def loaded(server: HearthServer) -> dict[str, dict[str, Any]]:
    answer = httpx.get(f"{server.base_url}/admin/models/loaded", timeout=10).json()
    return {model["name"]: model for model in answer["data"]}


def ask(server: HearthServer, model: str) -> None:
    server.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )


def test_loading_a_model_that_does_not_fit_evicts_the_idle_one(server: HearthServer) -> None:
    assert set(loaded(server)) == {BUNDLED}
    ask(server, SECOND)
    assert set(loaded(server)) == {SECOND}
    ask(server, BUNDLED)
    assert set(loaded(server)) == {BUNDLED}
    # An evicted preloaded model does not make the server unready: it loads again on demand.
    assert httpx.get(f"{server.base_url}/ready", timeout=10).status_code == 200


def test_no_room_and_a_full_queue_is_503_with_retry_after(server: HearthServer) -> None:
    ask(server, BUNDLED)
    started = threading.Event()

    def hold_bundled() -> None:
        stream = server.openai().chat.completions.create(
            model=BUNDLED,
            messages=[{"role": "user", "content": "Write a long story."}],
            max_tokens=400,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for _ in stream:
            started.set()

    holder = threading.Thread(target=hold_bundled)
    holder.start()
    try:
        assert started.wait(60)
        response = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": SECOND, "messages": [{"role": "user", "content": "Hi"}]},
            timeout=30,
        )
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        error = response.json()["error"]
        assert error["code"] == "server_busy"
        assert SECOND in error["message"]
    finally:
        holder.join(120)
    assert set(loaded(server)) == {BUNDLED}  # the busy model was not evicted


def test_a_model_that_can_never_fit_is_a_400_naming_its_size(server: HearthServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(server, HUGE)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_too_large"
    assert "GiB of memory" in body["message"] and "memory_budget" in body["message"]
    time.sleep(0.2)
    assert HUGE not in loaded(server)
