"""/v1/models and the legacy /v1/completions endpoint through the openai SDK."""

from __future__ import annotations

import openai
import pytest

from support.hearth_server import HearthServer

MODEL = "gemma-3-270m"
EMBEDDINGS = "all-minilm-l6-v2"


def client(server: HearthServer) -> openai.OpenAI:
    return server.openai()


def test_models_lists_the_bundled_models(hearth: HearthServer) -> None:
    models = client(hearth).models.list()
    assert [m.id for m in models.data] == [EMBEDDINGS, MODEL]  # by name
    assert {m.owned_by for m in models.data} == {"hearth"}
    embeddings, chat = (m.model_extra or {} for m in models.data)
    assert chat["capabilities"] == ["chat", "completion", "tools"]
    assert (embeddings["capabilities"], embeddings["state"]) == (["embeddings"], "not_loaded")
    assert client(hearth).models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client(hearth).models.retrieve("nope")


def test_completion_continues_the_prompt(hearth: HearthServer) -> None:
    reply = client(hearth).completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert reply.model == MODEL
    assert reply.choices[0].text
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 6
    assert reply.usage.prompt_tokens >= 5


def test_completion_stream_with_usage(hearth: HearthServer) -> None:
    stream = client(hearth).completions.create(
        model=MODEL,
        prompt="One, two, three,",
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens == 10


def test_stop_sequences_reach_the_engine(hearth: HearthServer) -> None:
    reply = client(hearth).completions.create(
        model=MODEL,
        prompt="1, 2, 3, 4, 5, 6, 7,",
        max_tokens=30,
        temperature=0,
        stop=[","],
    )
    assert "," not in reply.choices[0].text
    assert reply.choices[0].finish_reason == "stop"
