"""The Messages API through a real `hearth serve` and the real engine, with the real `anthropic`
SDK: replies streamed and not, tools both ways, token counting, and errors in Anthropic's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from support.hearth_server import HearthServer

MODEL = "gemma-3-270m"
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def client(hearth: HearthServer) -> Iterator[anthropic.Anthropic]:
    # The SDK sends the key in x-api-key; Hearth accepts it (and Authorization) without complaint.
    with anthropic.Anthropic(base_url=hearth.base_url, api_key="unused", max_retries=0) as client:
        yield client


def test_message(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=8,
        system="You are terse.",
        messages=[{"role": "user", "content": "Name a colour."}],
        extra_body={"temperature": 0, "top_k": 1},  # this SDK no longer offers them as arguments
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    [block] = message.content
    assert block.type == "text" and block.text
    assert message.stop_reason in {"end_turn", "max_tokens"}
    assert message.usage.input_tokens > 0
    assert 0 < message.usage.output_tokens <= 8


def test_max_tokens_stop_reason(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=2,
        messages=[{"role": "user", "content": "Tell me a long story about a dragon."}],
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2


def test_streamed_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=8,
        messages=[{"role": "user", "content": "Count to five."}],
    ) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert "message_delta" in kinds
    [block] = message.content
    assert block.type == "text" and block.text
    assert message.stop_reason in {"end_turn", "max_tokens"}
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 8


def assert_well_formed(message: anthropic.types.Message) -> None:
    """Text and tool_use blocks, and a stop reason that agrees with them. (Without a forced
    choice the small bundled model may or may not call a tool; `tool_choice` any and tool are
    constrained to a call, checked against the schema in test_structured.py.)"""
    assert message.content
    calls = [block for block in message.content if block.type == "tool_use"]
    for block in message.content:
        assert block.type in {"text", "tool_use"}
    for call in calls:
        assert call.name == "get_weather" and call.id and isinstance(call.input, dict)
    if calls:
        assert message.stop_reason == "tool_use"
    else:
        assert message.stop_reason in {"end_turn", "max_tokens"}


def test_a_tool_definition_is_offered_to_the_model(client: anthropic.Anthropic) -> None:
    question = {"role": "user", "content": "What is the weather in Paris?"}
    without = client.messages.count_tokens(model=MODEL, messages=[question])  # type: ignore[list-item]
    message = client.messages.create(
        model=MODEL,
        max_tokens=60,  # room for the whole forced call
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any"},
        messages=[question],  # type: ignore[list-item]
        extra_body={"temperature": 0},
    )
    assert message.usage.input_tokens > without.input_tokens + 10  # the tool is in the prompt
    assert_well_formed(message)


def test_a_tool_definition_streamed(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=60,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        extra_body={"temperature": 0},
    ) as stream:
        message = stream.get_final_message()
    assert_well_formed(message)


def test_a_tool_result_conversation_is_answered(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL,
        max_tokens=8,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Sunny, 24 C"},
                    {"type": "text", "text": "Thanks. Summarise it."},
                ],
            },
        ],
    )
    assert message.stop_reason in {"end_turn", "max_tokens", "tool_use"}
    assert message.content and message.usage.input_tokens > 0


def test_count_tokens_matches_the_input_tokens_of_a_reply(client: anthropic.Anthropic) -> None:
    conversation = {
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Describe the sea in one sentence, please."}],
    }
    counted = client.messages.count_tokens(model=MODEL, **conversation)  # type: ignore[arg-type]
    replied = client.messages.create(model=MODEL, max_tokens=1, **conversation)  # type: ignore[arg-type]
    assert counted.input_tokens == replied.usage.input_tokens
    with_tools = client.messages.count_tokens(
        model=MODEL,
        tools=[WEATHER],  # type: ignore[list-item]
        **conversation,  # type: ignore[arg-type]
    )
    assert with_tools.input_tokens > counted.input_tokens


def test_unknown_model_is_a_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(
            model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "no-such-model" in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
        ({"max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
         "messages[0].content"),
        ({"max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], "top_p": 2},
         "top_p"),
    ],
)  # fmt: skip
def test_bad_fields_are_400_in_anthropic_shape(
    hearth: HearthServer, body: dict[str, object], field: str
) -> None:
    response = httpx.post(
        f"{hearth.base_url}/v1/messages",
        json={"model": MODEL, **body},
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert field in error["error"]["message"]


def test_the_key_may_come_in_either_header(hearth: HearthServer) -> None:
    body = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    for headers in ({"x-api-key": "k"}, {"authorization": "Bearer k"}):
        response = httpx.post(
            f"{hearth.base_url}/v1/messages", json=body, headers=headers, timeout=120
        )
        assert response.status_code == 200, response.text
        assert json.loads(response.text)["type"] == "message"
        assert response.headers["x-hearth-deployment"] == MODEL  # routed like any request
