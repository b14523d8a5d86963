"""Engine replicas with prefix affinity (issue 15): a real `hearth serve` runs a model as two
llama-server processes on disjoint CPU cores, and each conversation's follow-up goes back to the
replica that served it, whose cache holds its document (the engine's own `cached_tokens` says
so; the other replica never saw that document)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.hearth_server import HearthServer, StartHearth

pytestmark = pytest.mark.engine

MODEL = "duo"
CONFIG = f"""
preload: []
log_format: json
models:
  {MODEL}:
    model: gemma-3-270m
    replicas: 2
    parallel: 2
    ctx_size: 4096
    keep_alive: -1
"""


def document(topic: str) -> str:
    """About 650 tokens, different for each topic from its first words on."""
    return " ".join(f"{topic} fact {i}: item {i} weighs {i * 3} grams." for i in range(1, 41))


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> HearthServer:
    config = tmp_path_factory.mktemp("config") / "hearth.yaml"
    config.write_text(CONFIG)
    return start_hearth("--config", str(config))


def chat(server: HearthServer, messages: list[dict[str, str]]) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": 4, "temperature": 0},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def replicas_in_access_log(server: HearthServer) -> list[tuple[str, str]]:
    """(replica, why) of each chat request, in order, from Hearth's JSON access log."""
    found = []
    for line in server.log().splitlines():
        if '"replica"' in line:
            entry = json.loads(line)
            if entry.get("replica"):
                found.append((entry["replica"], entry["replica_choice"]))
    return found


def test_conversations_stick_to_their_replicas_on_disjoint_cores(server: HearthServer) -> None:
    conversations = {
        topic: [{"role": "system", "content": document(topic)}] for topic in ("Apple", "Copper")
    }
    for turn in (1, 2):
        # The second turns in the other order: taking turns (round robin) would send each
        # conversation to the replica that has not seen it.
        order = list(conversations) if turn == 1 else list(reversed(conversations))
        for topic in order:
            messages = conversations[topic]
            messages.append({"role": "user", "content": f"Question {turn} about {topic}?"})
            answer = chat(server, messages)
            messages.append(answer["choices"][0]["message"])
            usage = answer["usage"]
            assert usage["prompt_tokens"] > 300
            cached = usage["prompt_tokens_details"]["cached_tokens"]
            if turn == 1:
                assert cached < 100, usage  # nobody has seen this document yet
            else:
                # Its replica's cache holds the document and the first turn.
                assert cached > 0.9 * usage["prompt_tokens"] - 40, usage

    # The first turns went to different replicas (least busy, round robin between idle ones);
    # the follow-ups to the same ones, by prefix.
    assert replicas_in_access_log(server) == [
        ("duo", "least_busy"),
        ("duo#1", "least_busy"),
        ("duo#1", "prefix"),
        ("duo", "prefix"),
    ]
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert f'hearth_replica_choices_total{{model="{MODEL}",reason="prefix"}} 2.0' in metrics
    assert f'hearth_model_memory_bytes{{model="{MODEL}"}}' in metrics

    loaded = httpx.get(f"{server.base_url}/admin/models/loaded", timeout=10).json()["data"]
    (duo,) = [m for m in loaded if m["name"] == MODEL]
    pids = [replica["pid"] for replica in duo["replicas"]]
    assert [replica["name"] for replica in duo["replicas"]] == ["duo", "duo#1"]
    assert sorted(pids) == sorted(server.engine_pids())

    cores = sorted(os.sched_getaffinity(0))
    pinned = [os.sched_getaffinity(pid) for pid in pids]
    if len(cores) >= 2:
        assert not pinned[0] & pinned[1]  # two llama-servers, each on its own cores
        assert pinned[0] | pinned[1] == set(cores)
    for pid, own in zip(pids, pinned, strict=True):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert argv[argv.index("--threads") + 1] == str(len(own))
