"""Ollama's /api/chat and /api/generate through a real `hearth serve` and the real engine, with the
real `ollama` Python client: streamed and not, options, structured output, timing fields, and
errors in Ollama's shape.

A small base model's words are not predictable, so answers are compared with a twin: the OpenAI
request the Ollama one should become, sent to the same server with greedy sampling and a seed
(Hearth then turns the engine's prompt cache off, so both are evaluated alike). Same text, same
token counts and the same finish mean the prompt, system, template and options were translated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
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
SEED = 4242
GREEDY = {"temperature": 0, "seed": SEED}  # as Ollama options
COUNTING = "1, 2, 3, 4,"  # a raw prompt the model goes on counting from, with commas


@pytest.fixture
def llm(hearth: HearthServer) -> openai.OpenAI:
    return hearth.openai()


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


def chat_twin(llm: openai.OpenAI, messages: list[Any], most: int) -> tuple[str, str, Any]:
    """(text, finish_reason, usage) of the OpenAI chat completion an Ollama request should be."""
    reply = llm.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=most, temperature=0, seed=SEED
    )
    choice = reply.choices[0]
    return choice.message.content or "", choice.finish_reason, reply.usage


def completion_twin(llm: openai.OpenAI, prompt: str, most: int) -> tuple[str, str, Any]:
    """(text, finish_reason, usage) of the OpenAI text completion of a raw prompt."""
    reply = llm.completions.create(
        model=MODEL, prompt=prompt, max_tokens=most, temperature=0, seed=SEED
    )
    choice = reply.choices[0]
    return choice.text, choice.finish_reason, reply.usage


def assert_same_as_twin(
    reply: ollama.ChatResponse | ollama.GenerateResponse,
    text: str,
    twin: tuple[str, str, Any],
) -> None:
    twin_text, finish, usage = twin
    assert text == twin_text
    assert reply.done is True and reply.done_reason == finish
    assert (reply.prompt_eval_count, reply.eval_count) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_chat(client: ollama.Client, llm: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Name a colour."}]
    reply = client.chat(
        model=f"{MODEL}:latest", messages=messages, options={"num_predict": 8, **GREEDY}
    )
    assert reply.model == f"{MODEL}:latest"  # the name as the client gave it, as Ollama does
    assert reply.message.role == "assistant"
    assert isinstance(reply.message.content, str) and reply.message.content
    assert_same_as_twin(reply, reply.message.content, chat_twin(llm, messages, most=8))
    assert reply.created_at and reply.created_at.endswith("Z")
    assert_timings(reply, most=8)


def test_chat_streamed(client: ollama.Client, llm: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Count to five."}]
    parts = list(
        client.chat(
            model=MODEL, messages=messages, options={"num_predict": 8, **GREEDY}, stream=True
        )
    )
    assert len(parts) >= 2
    *pieces, last = parts
    assert all(p.done is False and p.message.role == "assistant" for p in pieces)
    text = "".join(p.message.content or "" for p in pieces)
    assert text
    assert last.message.content == ""
    assert_same_as_twin(last, text, chat_twin(llm, messages, most=8))
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
    def generate(**stop: list[str]) -> ollama.GenerateResponse:
        options = {"num_predict": 12, **GREEDY, **stop}
        return client.generate(model=MODEL, prompt=COUNTING, raw=True, options=options)

    counted = generate().response or ""
    assert counted.count(",") >= 2  # without a stop sequence the model writes commas ...
    stopped = generate(stop=[","])
    assert stopped.response == counted.split(",")[0]  # ... and with one it stops at the first
    assert stopped.done_reason == "stop"
    assert stopped.eval_count is not None and stopped.eval_count < 12


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


def test_generate(client: ollama.Client, llm: openai.OpenAI) -> None:
    """Without `raw`, the system and the prompt are a chat under the model's template."""
    reply = client.generate(
        model=MODEL,
        prompt="Say hello.",
        system="Be brief.",
        options={"num_predict": 6, **GREEDY},
    )
    assert reply.model == MODEL
    assert isinstance(reply.response, str) and reply.response
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert_same_as_twin(reply, reply.response, chat_twin(llm, messages, most=6))
    assert_timings(reply, most=6)


def test_generate_streamed_raw(client: ollama.Client, llm: openai.OpenAI) -> None:
    """Counting never ends by itself: num_predict must end it, one line per generated token."""
    parts = list(
        client.generate(
            model=MODEL,
            prompt=COUNTING,
            raw=True,
            stream=True,
            options={"num_predict": 6, **GREEDY},
        )
    )
    *pieces, last = parts
    assert all(p.done is False and p.response for p in pieces)
    assert last.done is True and last.response == ""
    assert last.done_reason == "length"
    assert last.eval_count == len(pieces) == 6
    text = "".join(p.response or "" for p in pieces)
    assert_same_as_twin(last, text, completion_twin(llm, COUNTING, most=6))
    assert_timings(last, most=6)


def test_raw_prompt_is_sent_as_is(client: ollama.Client, llm: openai.OpenAI) -> None:
    """With `raw` the prompt is a text completion; without, the chat template wraps it."""
    options = {"num_predict": 4, **GREEDY}
    raw = client.generate(model=MODEL, prompt="Hello there", raw=True, options=options)
    templated = client.generate(model=MODEL, prompt="Hello there", options=options)
    assert_same_as_twin(raw, raw.response or "", completion_twin(llm, "Hello there", most=4))
    user = [{"role": "user", "content": "Hello there"}]
    assert_same_as_twin(templated, templated.response or "", chat_twin(llm, user, most=4))
    assert raw.prompt_eval_count and templated.prompt_eval_count
    assert templated.prompt_eval_count > raw.prompt_eval_count


@pytest.mark.parametrize(
    ("system", "rendered"),
    [("You are terse.", "You are terse.\nQ: Hi\nA:"), (None, "Q: Hi\nA:")],
)
def test_template_is_rendered_for_a_raw_prompt(
    client: ollama.Client, llm: openai.OpenAI, system: str | None, rendered: str
) -> None:
    """A `template` is rendered by Hearth and the result sent as a raw prompt."""
    wrapped = client.generate(
        model=MODEL,
        prompt="Hi",
        system=system or "",
        template="{{ if .System }}{{ .System }}\n{{ end }}Q: {{ .Prompt }}\nA:",
        options={"num_predict": 4, **GREEDY},
    )
    assert_same_as_twin(wrapped, wrapped.response or "", completion_twin(llm, rendered, most=4))


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
