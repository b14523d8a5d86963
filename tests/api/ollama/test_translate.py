"""Ollama ↔ OpenAI translation without a server: names, keep_alive, options, messages,
and an OpenAI stream (one that breaks off included) turned into NDJSON lines."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from hearth.api.ollama import names
from hearth.api.ollama.protocol import (
    ChatRequest,
    GenerateRequest,
    Message,
    Options,
    error_body,
    keep_alive_seconds,
)
from hearth.api.ollama.reply import Timer, chat_reply, stream_lines, tool_calls
from hearth.api.ollama.translate import (
    chat_messages,
    generate_body,
    image_url,
    option_fields,
    sampling_fields,
)
from hearth.errors import InvalidRequest, ModelNotFound
from hearth.wire.outcome import CompletionStream

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
    "AAAABJRU5ErkJggg=="
)


def test_names_resolve_to_the_catalogue() -> None:
    known = {"gemma-3-270m", "acme/tiny-GGUF:Q4_K_M", "odd:latest"}
    available = sorted(known)

    def resolve(name: str) -> str:
        return names.resolve(name, known.__contains__, available)

    assert resolve("gemma-3-270m") == "gemma-3-270m"
    assert resolve("gemma-3-270m:latest") == "gemma-3-270m"
    assert resolve("hf.co/acme/tiny-GGUF:Q4_K_M") == "acme/tiny-GGUF:Q4_K_M"
    assert resolve("odd:latest") == "odd:latest"  # a name known as given wins
    with pytest.raises(ModelNotFound, match="'gemma-3-270m:7b' does not exist"):
        resolve("gemma-3-270m:7b")
    assert names.listed("gemma-3-270m") == "gemma-3-270m:latest"
    assert names.listed("acme/tiny-GGUF:Q4_K_M") == "acme/tiny-GGUF:Q4_K_M"
    assert names.canonical("copy:latest") == "copy"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0), ("-1m", -60.0), (0, 0.0), ("90", 90.0),
     ("1.5s", 1.5), ("250ms", 0.25), (30.5, 30.5)],
)  # fmt: skip
def test_keep_alive_is_a_go_duration_or_seconds(value: str | float, seconds: float) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 minutes", "m5", "", True])
def test_bad_keep_alive_is_refused(bad: str | bool) -> None:
    with pytest.raises(ValueError, match="duration"):
        keep_alive_seconds(bad)


def test_options_become_sampling_fields() -> None:
    options = Options.model_validate(
        {"temperature": 0.2, "top_k": 5, "num_predict": 7, "stop": "\n", "repeat_penalty": 1.1,
         "min_p": 0.05, "seed": 3, "num_keep": 4, "num_ctx": 8192, "num_thread": 2}
    )  # fmt: skip
    assert option_fields(options) == {
        "temperature": 0.2,
        "top_k": 5,
        "max_tokens": 7,
        "stop": ["\n"],
        "repeat_penalty": 1.1,
        "min_p": 0.05,
        "seed": 3,
        "n_keep": 4,
    }
    assert "max_tokens" not in option_fields(Options(num_predict=-1))
    with pytest.raises(InvalidRequest, match="num_predict"):
        option_fields(Options(num_predict=0))


def test_format_and_keep_alive() -> None:
    as_json = ChatRequest(model="m", format="json", keep_alive="10m", stream=True)
    fields = sampling_fields(as_json, "m", stream=True)
    assert fields["response_format"] == {"type": "json_object"}
    assert fields["keep_alive"] == 600.0
    assert fields["stream_options"] == {"include_usage": True}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fields = sampling_fields(ChatRequest(model="m", format=schema), "m", stream=False)
    assert fields["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    assert "response_format" not in sampling_fields(ChatRequest(model="m", format=""), "m", False)


def test_images_become_data_uris() -> None:
    assert image_url(PNG, "images[0]")["image_url"]["url"] == f"data:image/png;base64,{PNG}"
    jpeg = "/9j/4AAQSkZJRgABAQAAAQABAAD/"
    assert image_url(jpeg, "x")["image_url"]["url"].startswith("data:image/jpeg;base64,")
    [message] = chat_messages([Message(role="user", content="What is it?", images=[PNG])])
    assert message["content"][0] == {"type": "text", "text": "What is it?"}
    assert message["content"][1]["type"] == "image_url"


def test_tool_calls_get_ids_and_results_answer_them() -> None:
    messages = [
        Message(role="user", content="Weather in Paris and Rome?"),
        Message.model_validate(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "time", "arguments": {}}},
                ],
            }
        ),
        Message(role="tool", content="12:00", tool_name="time"),
        Message(role="tool", content="sunny"),
    ]
    out = chat_messages(messages)
    calls = out[1]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["weather", "time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert out[2] == {"role": "tool", "content": "12:00", "tool_call_id": calls[1]["id"],
                      "name": "time"}  # fmt: skip
    assert out[3]["tool_call_id"] == calls[0]["id"]
    # ... and back: arguments as objects, as Ollama clients expect.
    assert tool_calls([{"function": {"name": "f", "arguments": '{"x": 1}'}}]) == [
        {"function": {"name": "f", "arguments": {"x": 1}}}
    ]


def test_generate_uses_the_chat_template_unless_raw() -> None:
    path, capability, body = generate_body(
        GenerateRequest(model="m", prompt="Hi", system="Be brief.", stream=False), "m"
    )
    assert (path, capability) == ("/v1/chat/completions", "chat")
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    path, capability, body = generate_body(
        GenerateRequest(model="m", prompt="<start>Hi", raw=True, system="ignored"), "m"
    )
    assert (path, capability) == ("/v1/completions", "completion")
    assert body["prompt"] == "<start>Hi"
    with pytest.raises(InvalidRequest, match="suffix"):
        generate_body(GenerateRequest(model="m", prompt="a", suffix="b"), "m")


def test_error_shape() -> None:
    body = {"error": {"message": "no such model", "type": "x", "param": None, "code": None}}
    assert error_body(404, body) == {"error": "no such model"}


def test_a_whole_answer_carries_timings_from_the_engine() -> None:
    body = {
        "choices": [
            {"message": {"role": "assistant", "content": "Hello"}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4},
        "timings": {"prompt_ms": 20.0, "predicted_ms": 100.0, "prompt_n": 9, "predicted_n": 4},
    }
    reply = chat_reply(body, "m:latest", Timer(started=time.perf_counter() - 1.0))
    assert reply["message"] == {"role": "assistant", "content": "Hello"}
    assert reply["done"] is True and reply["done_reason"] == "length"
    assert reply["prompt_eval_count"] == 9 and reply["eval_count"] == 4
    assert reply["prompt_eval_duration"] == 20_000_000
    assert reply["eval_duration"] == 100_000_000
    assert reply["total_duration"] >= 1_000_000_000
    assert reply["load_duration"] == reply["total_duration"] - 120_000_000


def _events(*chunks: dict[str, object] | str) -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            data = chunk if isinstance(chunk, str) else json.dumps(chunk)
            yield f"data: {data}\n\n".encode()

    return events()


async def _noop() -> None:
    return None


async def _lines(stream: CompletionStream, chat: bool = True) -> list[dict[str, object]]:
    out = []
    async for line in stream_lines(stream, "m", Timer(time.perf_counter()), chat=chat):
        assert line.endswith(b"\n")
        out.append(json.loads(line))
    return out


async def test_a_stream_becomes_ndjson_with_a_done_line() -> None:
    def delta(**d: object) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": d, "finish_reason": None}]}

    stream = CompletionStream(
        _events(
            delta(role="assistant", content=""),
            delta(content="Hel"),
            delta(content="lo"),
            delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": '{"a"'}}]),
            delta(tool_calls=[{"index": 0, "function": {"arguments": ": 1}"}}]),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}},
            "[DONE]",
        ),
        "m",
        _noop,
    )
    lines = await _lines(stream)
    assert [line["message"]["content"] for line in lines[:-1]] == ["Hel", "lo"]  # type: ignore[index]
    assert all(line["done"] is False for line in lines[:-1])
    last = lines[-1]
    assert last["done"] is True and last["done_reason"] == "stop"
    assert last["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
    }
    assert last["prompt_eval_count"] == 5 and last["eval_count"] == 3


async def test_a_stream_that_breaks_off_ends_with_an_error_line() -> None:
    stream = CompletionStream(
        _events(
            {"choices": [{"index": 0, "delta": {"content": "Hi"}}]},
            {"error": {"message": "the engine crashed", "type": "server_error"}},
            "[DONE]",
        ),
        "m",
        _noop,
    )
    lines = await _lines(stream, chat=False)
    assert lines[0]["response"] == "Hi"
    assert lines[-1] == {"error": "the engine crashed"}
    assert not any(line.get("done") for line in lines)
