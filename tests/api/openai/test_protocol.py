"""Request validation: every bad request is a 400 whose message names the field to fix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hearth.api.openai.chat import ChatCompletionRequest
from hearth.api.openai.completions import CompletionRequest
from hearth.errors import InvalidRequest
from hearth.wire.base import parse_request

GOOD_CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def chat_with(**changes: Any) -> bytes:
    return json.dumps({**GOOD_CHAT, **changes}).encode()


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (chat_with(messages=[]), "messages", "at least 1 item"),
        (chat_with(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role", "'user'"),
        (chat_with(messages=[{"role": "user"}]), "messages[0]", "needs 'content'"),
        (chat_with(temperature=3), "temperature", "less than or equal to 2"),
        (chat_with(temperature="hot"), "temperature", "valid number"),
        (chat_with(max_tokens=-5), "max_tokens", "greater than or equal to 1"),
        (chat_with(top_p=1.5), "top_p", "less than or equal to 1"),
        (chat_with(n=0), "n", "greater than or equal to 1"),
        (chat_with(stream="yes please"), "stream", "valid boolean"),
        (chat_with(tool_choice="required"), None, "'tool_choice' requires 'tools'"),
        (chat_with(response_format={"type": "json_schema"}), "response_format", "json_schema"),
        (
            chat_with(messages=[{"role": "user", "content": [{"type": "video", "x": 1}]}]),
            "messages[0].content[0]",
            "'video'",
        ),
        (json.dumps({"messages": GOOD_CHAT["messages"]}).encode(), "model", "Field required"),
    ],
)
def test_bad_chat_requests_name_the_field(body: bytes, param: str | None, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(ChatCompletionRequest, body)
    error = caught.value
    assert error.status_code == 400
    assert error.param == param
    assert fragment in error.message
    if param:
        assert f"'{param}'" in error.message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_unparseable_bodies(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        parse_request(ChatCompletionRequest, body)


def test_valid_chat_keeps_vendor_extras_for_the_engine() -> None:
    request = parse_request(ChatCompletionRequest, chat_with(top_k=20, min_p=0.1, temperature=0))
    forwarded = request.model_dump(exclude_unset=True, by_alias=True)
    assert forwarded["top_k"] == 20
    assert forwarded["min_p"] == 0.1
    assert forwarded["temperature"] == 0
    assert "tools" not in forwarded  # unset fields are not invented


def test_assistant_tool_call_message_without_content_is_valid() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    request = parse_request(ChatCompletionRequest, chat_with(messages=messages))
    assert request.messages[1].tool_calls is not None


def test_json_schema_alias_is_forwarded_under_its_wire_name() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}
    request = parse_request(ChatCompletionRequest, chat_with(response_format=fmt))
    dumped = request.model_dump(exclude_unset=True, by_alias=True)
    assert dumped["response_format"]["json_schema"]["schema"] == {"type": "object"}


@pytest.mark.parametrize(
    ("changes", "param", "fragment"),
    [
        ({"prompt": []}, "prompt", "empty"),
        ({"prompt": ["a", "b"]}, "prompt", "one prompt per request"),
        ({"max_tokens": -1}, "max_tokens", "greater than or equal to 0"),
        ({"prompt": None}, "prompt", "valid string"),
    ],
)
def test_bad_completion_requests(changes: dict[str, Any], param: str, fragment: str) -> None:
    body = json.dumps({"model": "m", "prompt": "Once", **changes}).encode()
    with pytest.raises(InvalidRequest) as caught:
        parse_request(CompletionRequest, body)
    assert caught.value.param == param
    assert fragment in caught.value.message


def test_token_prompts_are_accepted() -> None:
    body = json.dumps({"model": "m", "prompt": [1, 2, 3], "max_tokens": 0}).encode()
    assert parse_request(CompletionRequest, body).prompt == [1, 2, 3]
