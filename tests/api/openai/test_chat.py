"""/v1/chat/completions through a real `hearth serve` and the real engine, with the openai SDK."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from support.engine_probe import engine_url, slots_busy
from support.hearth_server import HearthServer, StartHearth

MODEL = "gemma-3-270m"


def client(server: HearthServer) -> openai.OpenAI:
    return server.openai()


def test_chat_answers_with_usage_and_the_public_model_name(hearth: HearthServer) -> None:
    reply = client(hearth).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.model == MODEL
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_message_content_reaches_the_model(hearth: HearthServer) -> None:
    """With a broken template every prompt is the same few tokens whatever the messages say."""
    llm = client(hearth)

    def prompt_tokens(text: str) -> int:
        reply = llm.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=1
        )
        assert reply.usage is not None
        return reply.usage.prompt_tokens

    short = prompt_tokens("Hi.")
    long = prompt_tokens("Hi. " + "Tell me about the history of bread baking in Europe. " * 10)
    assert long > short + 50


def test_same_seed_same_answer(hearth: HearthServer) -> None:
    llm = client(hearth)
    answers = {
        llm.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a word."}],
            max_tokens=12,
            temperature=1.0,
            seed=1234,
        )
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(answers) == 1


def test_stream_relays_chunks_and_ends_with_usage(hearth: HearthServer) -> None:
    stream = client(hearth).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 5, "tokens should arrive as separate chunks, not one buffered blob"
    assert all(c.model == MODEL for c in chunks)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert usage_chunks, "include_usage asks for a final usage chunk"
    usage = usage_chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 24
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["length"]


def test_first_chunk_arrives_before_generation_ends(hearth: HearthServer) -> None:
    """Streams are relayed as they are generated, not buffered until the end."""
    with httpx.stream(
        "POST",
        f"{hearth.base_url}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 200,
            "ignore_eos": True,
            "stream": True,
        },
        timeout=60,
    ) as response:
        started = time.monotonic()
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_at = time.monotonic() - started
        rest = [line for line in lines if line.startswith("data: ")]
        total = time.monotonic() - started
    assert '"choices"' in first
    assert rest[-1] == "data: [DONE]"
    assert first_at < total / 3


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_tools_are_accepted_and_answered(hearth: HearthServer) -> None:
    """The tools reach the engine's prompt, and the answer is a well-formed chat completion.

    What a 270M base model writes is not predictable, so the prompt is checked instead: the
    reply's prompt_tokens must be exactly the engine's own rendering of these messages with
    these tools (llama-server's /apply-template), and that rendering must describe the tool.
    """
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client(hearth).chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=32,
        temperature=0,
    )
    engine = engine_url(hearth)
    with_tools = _rendered_tokens(engine, {"messages": messages, "tools": [WEATHER_TOOL]})
    without_tools = _rendered_tokens(engine, {"messages": messages})
    assert with_tools > without_tools + 20  # the description of the tool is in the prompt
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == with_tools

    assert reply.object == "chat.completion" and reply.model == MODEL
    [choice] = reply.choices
    assert choice.message.role == "assistant"
    assert 0 < reply.usage.completion_tokens <= 32
    # Whichever the model chose, the finish reason agrees with the message's shape.
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert call.id and call.type == "function"
            assert call.function.name == "get_weather"
            assert isinstance(json.loads(call.function.arguments), dict)
    else:
        assert choice.finish_reason in {"stop", "length"}
        assert choice.message.content


def _rendered_tokens(engine_url: str, body: dict[str, object]) -> int:
    """How many tokens the engine's chat template makes of a request body."""
    rendered = httpx.post(f"{engine_url}/apply-template", json=body, timeout=30)
    rendered.raise_for_status()
    prompt = rendered.json()["prompt"]
    if "tools" in body:
        assert "get_weather" in prompt and "Weather for a city" in prompt
    # As the engine does for a chat prompt: with the model's BOS token added.
    tokenize = {"content": prompt, "add_special": True}
    tokens = httpx.post(f"{engine_url}/tokenize", json=tokenize, timeout=30)
    tokens.raise_for_status()
    return len(tokens.json()["tokens"])


def test_json_response_format_gives_json(hearth: HearthServer) -> None:
    reply = client(hearth).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give a JSON object with a name."}],
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0,
    )
    content = reply.choices[0].message.content or ""
    assert content.lstrip().startswith("{")


async def test_eight_concurrent_requests_all_succeed(hearth: HearthServer) -> None:
    llm = openai.AsyncOpenAI(base_url=f"{hearth.base_url}/v1", api_key="unused", max_retries=0)

    async def one(i: int) -> int:
        reply = await llm.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"Request number {i}."}],
            max_tokens=16,
            extra_body={"ignore_eos": True},
        )
        assert reply.usage is not None
        return reply.usage.completion_tokens

    try:
        assert await asyncio.gather(*(one(i) for i in range(8))) == [16] * 8
    finally:
        await llm.close()


def test_client_disconnect_stops_generation(start_hearth: StartHearth) -> None:
    server = start_hearth()
    engine = engine_url(server)
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write forever."}],
            "max_tokens": 1500,
            "ignore_eos": True,
            "stream": True,
        },
        timeout=60,
    ) as response:
        lines = (line for line in response.iter_lines() if line.startswith("data: "))
        first = [next(lines) for _ in range(3)]
        assert slots_busy(engine) == 1, first
    # Hanging up must free the engine's slot long before 1500 tokens could be generated.
    deadline = time.monotonic() + 10
    while slots_busy(engine) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slots_busy(engine) == 0


def test_engine_killed_mid_stream_fails_cleanly_then_recovers(start_hearth: StartHearth) -> None:
    server = start_hearth()
    llm = client(server)
    (engine_pid,) = server.engine_pids()
    stream = llm.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a long essay."}],
        max_tokens=2000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    received = 0
    with pytest.raises(openai.APIError) as caught:
        for _chunk in stream:
            received += 1
            if received == 3:
                os.kill(engine_pid, signal.SIGKILL)
    assert received >= 3
    assert "stopped while answering" in caught.value.message

    # The supervisor restarts the engine; the next request waits for it and succeeds.
    reply = llm.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello again."}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
    assert server.engine_pids() != [engine_pid]
    ready = httpx.get(f"{server.base_url}/ready", timeout=5).json()
    assert ready["models"][MODEL]["restarts"] == 1


def test_engine_killed_during_a_plain_request_gives_a_clear_error(
    start_hearth: StartHearth,
) -> None:
    server = start_hearth()
    (engine_pid,) = server.engine_pids()
    killer = threading.Timer(1.5, os.kill, (engine_pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        client(server).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a long essay."}],
            max_tokens=2000,
            extra_body={"ignore_eos": True},
        )
    killer.join()
    assert caught.value.status_code == 502
    assert "stopped while answering" in caught.value.message
    assert time.monotonic() - started < 30  # an error, not a hang until the timeout


def test_logprobs_are_passed_through(hearth: HearthServer) -> None:
    reply = client(hearth).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=3,
        logprobs=True,
        top_logprobs=2,
        extra_body={"ignore_eos": True},
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert len(logprobs.content) == 3
    assert all(len(token.top_logprobs) == 2 for token in logprobs.content)
    assert all(token.logprob <= 0 for token in logprobs.content)
