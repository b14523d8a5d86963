"""Ollama's /api/chat and /api/generate through a real `hearth serve` and the real engine, with the
real `ollama` Python client: streamed and not, options, structured output, timing fields, and
errors in Ollama's shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from support.hearth_server import HearthServer

MODEL = "gemma-3-270m"
TIMINGS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


@pytest.fixture
def client(hearth: HearthServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=hearth.base_url) as client:
        yield client


def assert_timings(reply: ollama.ChatResponse | ollama.GenerateResponse, most: int) -> None:
    for name in TIMINGS:
        assert isinstance(reply[name], int) and reply[name] >= 0, name
    assert reply.prompt_eval_count and reply.prompt_eval_count > 0
    assert reply.eval_count is not None and 0 < reply.eval_count <= most
    assert reply.eval_duration and reply.eval_duration > 0
    assert reply.total_duration is not None
    parts = (reply.load_duration or 0) + (reply.prompt_eval_duration or 0) + reply.eval_duration
    assert reply.total_duration >= parts - 1_000_000  # rounding to nanoseconds


def test_chat(client: ollama.Client) -> None:
    reply = client.chat(
        model=f"{MODEL}:latest",
        messages=[{"role": "user", "content": "Name a colour."}],
        options={"num_predict": 8, "temperature": 0},
    )
    assert reply.model == f"{MODEL}:latest"  # the name as the client gave it, as Ollama does
    assert reply.message.role == "assistant"
    assert isinstance(reply.message.content, str) and reply.message.content
    assert reply.done is True and reply.done_reason in {"stop", "length"}
    assert reply.created_at and reply.created_at.endswith("Z")
    assert_timings(reply, most=8)


def test_chat_streamed(client: ollama.Client) -> None:
    parts = list(
        client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Count to five."}],
            options={"num_predict": 8, "temperature": 0},
            stream=True,
        )
    )
    assert len(parts) >= 2
    *pieces, last = parts
    assert all(p.done is False and p.message.role == "assistant" for p in pieces)
    assert "".join(p.message.content or "" for p in pieces)
    assert last.done is True and last.done_reason in {"stop", "length"}
    assert last.message.content == ""
    assert_timings(last, most=8)


def test_chat_options_reach_the_engine(client: ollama.Client) -> None:
    """The same seed gives the same answer; a different one (at a high temperature) differs."""

    def answer(seed: int) -> str:
        reply = client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a word."}],
            options={"num_predict": 12, "temperature": 1.5, "seed": seed, "top_k": 100},
        )
        return reply.message.content or ""

    first = answer(7)
    assert answer(7) == first
    assert any(answer(seed) != first for seed in (8, 9, 10))


def test_stop_option(client: ollama.Client) -> None:
    reply = client.generate(
        model=MODEL,
        prompt="1, 2, 3, 4,",
        raw=True,
        options={"num_predict": 30, "temperature": 0, "stop": [","]},
    )
    assert "," not in (reply.response or "")
    assert reply.done_reason == "stop"


def test_structured_output_follows_the_schema(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    reply = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Pick a colour. Answer in JSON."}],
        format=schema,
        options={"num_predict": 40, "temperature": 0},
    )
    assert reply.done_reason == "stop"
    assert json.loads(reply.message.content or "")["colour"] in {"red", "green", "blue"}


def test_generate(client: ollama.Client) -> None:
    reply = client.generate(
        model=MODEL, prompt="Say hello.", system="Be brief.", options={"num_predict": 6}
    )
    assert reply.model == MODEL
    assert isinstance(reply.response, str) and reply.response
    assert reply.done is True
    assert_timings(reply, most=6)


def test_generate_streamed_raw(client: ollama.Client) -> None:
    parts = list(
        client.generate(
            model=MODEL,
            prompt="The capital of France is",
            raw=True,
            stream=True,
            options={"num_predict": 6, "temperature": 0},
        )
    )
    *pieces, last = parts
    assert pieces and all(p.done is False for p in pieces)
    assert "".join(p.response or "" for p in pieces)
    assert last.done is True and last.response == ""
    assert_timings(last, most=6)


def test_raw_prompt_is_sent_as_is(client: ollama.Client) -> None:
    """Without `raw` the chat template wraps the prompt, so the engine sees more tokens."""
    raw = client.generate(model=MODEL, prompt="Hello there", raw=True, options={"num_predict": 1})
    templated = client.generate(model=MODEL, prompt="Hello there", options={"num_predict": 1})
    assert raw.prompt_eval_count and templated.prompt_eval_count
    assert templated.prompt_eval_count > raw.prompt_eval_count


def test_template_is_rendered_for_a_raw_prompt(client: ollama.Client) -> None:
    plain = client.generate(model=MODEL, prompt="Hi", raw=True, options={"num_predict": 1})
    wrapped = client.generate(
        model=MODEL,
        prompt="Hi",
        system="You are terse.",
        template="{{ if .System }}{{ .System }}\n{{ end }}Q: {{ .Prompt }}\nA:",
        options={"num_predict": 1},
    )
    assert plain.prompt_eval_count and wrapped.prompt_eval_count
    assert wrapped.prompt_eval_count > plain.prompt_eval_count + 4


def test_unknown_model_is_404_in_ollama_shape(client: ollama.Client, hearth: HearthServer) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert "no-such-model" in caught.value.error
    raw = httpx.post(f"{hearth.base_url}/api/generate", json={"model": "nope", "prompt": "x"})
    assert raw.status_code == 404
    assert set(raw.json()) == {"error"} and isinstance(raw.json()["error"], str)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "hi"}], "options": {"temperature": -1}},
         "options.temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "keep_alive": "soon"}, "keep_alive"),
    ],
)  # fmt: skip
def test_bad_fields_are_400_in_ollama_shape(
    hearth: HearthServer, body: dict[str, object], field: str
) -> None:
    response = httpx.post(f"{hearth.base_url}/api/chat", json={"model": MODEL, **body})
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert field in response.json()["error"]


def test_embeddings_of_a_chat_model_are_refused_plainly(client: ollama.Client) -> None:
    for call in (lambda: client.embed(model=MODEL, input="hi"),
                 lambda: client.embeddings(model=MODEL, prompt="hi")):  # fmt: skip
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 400
        assert "does not support embeddings" in caught.value.error


def test_answers_are_routed_like_openai_ones(hearth: HearthServer) -> None:
    body = {"model": MODEL, "prompt": "Hi", "options": {"num_predict": 1}}
    whole = httpx.post(
        f"{hearth.base_url}/api/generate", json={**body, "stream": False}, timeout=120
    )
    assert whole.status_code == 200
    assert whole.headers["x-hearth-deployment"] == MODEL
    assert whole.headers["x-request-id"]
    with httpx.stream(
        "POST", f"{hearth.base_url}/api/generate", json=body, timeout=120
    ) as streamed:
        assert streamed.headers["content-type"] == "application/x-ndjson"
        assert streamed.headers["x-hearth-deployment"] == MODEL
        lines = [json.loads(line) for line in streamed.iter_lines() if line]
    assert lines[-1]["done"] is True


def engine_url(server: HearthServer) -> str:
    """The engine's own URL, read from its command line (tests only: users never need it)."""
    (pid,) = server.engine_pids()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return f"http://127.0.0.1:{argv[argv.index(b'--port') + 1].decode()}"


def slots_busy(url: str) -> int:
    return sum(1 for slot in httpx.get(f"{url}/slots", timeout=5).json() if slot["is_processing"])


def test_hanging_up_stops_generation(hearth: HearthServer) -> None:
    engine = engine_url(hearth)
    # Counting goes on and on: the model is still writing when the client hangs up.
    body = {
        "model": MODEL,
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8,",
        "raw": True,
        "options": {"num_predict": 1500, "temperature": 0},
    }
    with httpx.stream("POST", f"{hearth.base_url}/api/generate", json=body, timeout=60) as response:
        lines = response.iter_lines()
        first = [next(lines) for _ in range(3)]
        assert slots_busy(engine) == 1, first
    # Hanging up must free the engine's slot long before 1500 tokens could be generated.
    deadline = time.monotonic() + 10
    while slots_busy(engine) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slots_busy(engine) == 0
