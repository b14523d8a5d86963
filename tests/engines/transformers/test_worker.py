"""The transformers worker as a real process started from its launcher: a cross-encoder reranks
through sentence-transformers' CrossEncoder, a causal LM completes with stop sequences, and
requests it cannot serve are OpenAI-shaped 400s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hearth.engines.ports import free_port
from hearth.engines.process import EngineProcess
from hearth.engines.transformers.folder import inspect_folder
from hearth.engines.transformers.launcher import TransformersLauncher
from support.hf_models import write_tiny_chat_model, write_tiny_cross_encoder

pytest.importorskip("sentence_transformers", reason="needs the hearth[transformers] extra")


async def start_worker(model: Path, task: str, log: Path) -> EngineProcess:
    launcher = TransformersLauncher(
        model,
        "tiny",
        task,
        inspect_folder(model).capabilities(),
        threads=1,  # type: ignore[arg-type]
    )
    port = free_port("127.0.0.1")
    process = EngineProcess(launcher.command("127.0.0.1", port), "127.0.0.1", port, log)
    await process.start()
    async with httpx.AsyncClient(trust_env=False) as client:
        await process.wait_ready(client, 240)
    return process


@pytest.fixture
async def cross_encoder(tmp_path: Path) -> AsyncIterator[str]:
    process = await start_worker(
        write_tiny_cross_encoder(tmp_path / "ce"), "rerank", tmp_path / "w.log"
    )
    yield process.base_url
    await process.stop(10)


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[str]:
    process = await start_worker(
        write_tiny_chat_model(tmp_path / "chat"), "chat", tmp_path / "w.log"
    )
    yield process.base_url
    await process.stop(10)


async def test_a_cross_encoder_scores_every_document(cross_encoder: str) -> None:
    async with httpx.AsyncClient(base_url=cross_encoder, timeout=60) as client:
        documents = ["alpha", "beta gamma", "delta"]
        reply = (
            await client.post("/v1/rerank", json={"query": "q", "documents": documents})
        ).json()
        assert sorted(r["index"] for r in reply["results"]) == [0, 1, 2]
        scores = [r["relevance_score"] for r in reply["results"]]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)  # a one-label cross-encoder's sigmoid
        assert reply["usage"]["prompt_tokens"] > 0
        top = (
            await client.post("/rerank", json={"query": "q", "documents": documents, "top_n": 1})
        ).json()
        assert top["results"] == reply["results"][:1]
        wrong = await client.post("/v1/embeddings", json={"input": "x"})
        assert wrong.status_code == 400
        assert wrong.json()["error"]["message"] == "this worker serves rerank, not embeddings"


async def test_completion_stops_at_a_stop_sequence_streamed_or_not(chat: str) -> None:
    async with httpx.AsyncClient(base_url=chat, timeout=60) as client:
        base = {"prompt": "hello there", "max_tokens": 8, "temperature": 0}
        full = (await client.post("/v1/completions", json=base)).json()["choices"][0]
        assert full["finish_reason"] == "length"
        words = full["text"].split()
        assert len(words) >= 3
        stop = words[2][:3]
        cut = (await client.post("/v1/completions", json={**base, "stop": [stop]})).json()
        expected = full["text"][: full["text"].index(stop)]
        assert cut["choices"][0]["text"] == expected
        assert cut["choices"][0]["finish_reason"] == "stop"
        streamed = ""
        async with client.stream(
            "POST", "/v1/completions", json={**base, "stop": [stop], "stream": True}
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    streamed += json.loads(line[6:])["choices"][0]["text"]
        assert streamed == expected
        bad = await client.post("/v1/chat/completions", json={"messages": []})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "messages"
