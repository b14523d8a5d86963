"""Responses API requests as OpenAI chat requests, and chat completions as Response objects.

A request's input becomes *items* first (the shape OpenAI stores and lists them in, each with an
id); the chat messages are built from items, so a stored conversation (its items) and a new
request rebuild the same way."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from hearth.api.responses.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    NamedFunction,
    ReasoningItem,
    ResponsesRequest,
    TextFormatJSONSchema,
    TextFormatText,
)

Item = dict[str, Any]

# Chat sampling fields a client may send as extras (the Responses API has none of them), passed
# on; other unknown fields (`include`, `service_tier`, `prompt_cache_key`, ...) are not.
_SAMPLING_EXTENSIONS = (
    "seed",
    "stop",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
)

# finish_reason → incomplete_details.reason, for answers that did not end on their own.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# Request → items ------------------------------------------------------------------------------


def input_items(request: ResponsesRequest) -> list[Item]:
    """The request's input as stored items, each with an id (a string is one user message)."""
    given = request.input
    if isinstance(given, str):
        return [_message("user", [{"type": "input_text", "text": given}])]
    items: list[Item] = []
    for item in given:
        if isinstance(item, MessageItem):
            items.append(_message(item.role, _parts(item), item.id))
        elif isinstance(item, FunctionCallItem):
            items.append(
                {
                    "id": item.id or new_id("fc"),
                    "type": "function_call",
                    "call_id": item.call_id,
                    "name": item.name,
                    "arguments": item.arguments,
                    "status": "completed",
                }
            )
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output
            items.append(
                {
                    "id": item.id or new_id("fco"),
                    "type": "function_call_output",
                    "call_id": item.call_id,
                    "output": output
                    if isinstance(output, str)
                    else [part.model_dump(exclude_none=True) for part in output],
                    "status": "completed",
                }
            )
        elif isinstance(item, ReasoningItem):
            reasoning = item.model_dump(exclude_none=True)
            reasoning["id"] = item.id or new_id("rs")
            items.append(reasoning)
    return items


def _message(role: str, content: list[dict[str, Any]], item_id: str | None = None) -> Item:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": role,
        "content": content,
        "status": "completed",
    }


def _parts(item: MessageItem) -> list[dict[str, Any]]:
    if isinstance(item.content, str):
        kind = "output_text" if item.role == "assistant" else "input_text"
        part: dict[str, Any] = {"type": kind, "text": item.content}
        if kind == "output_text":
            part["annotations"] = []
        return [part]
    return [part.model_dump(exclude_none=True) for part in item.content]


# Items → chat messages ------------------------------------------------------------------------


def chat_messages(items: list[Item]) -> list[dict[str, Any]]:
    """OpenAI chat messages from items: a run of function calls (with the assistant text just
    before it) is one assistant message with tool_calls; reasoning items are left out (no engine
    can check them)."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if (
                last is not None
                and last["role"] == "assistant"
                and isinstance(last.get("content"), str | None)
            ):
                last.setdefault("tool_calls", []).append(call)
                if not last.get("content"):
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else _text_of(output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    return messages


def _chat_message(item: Item) -> dict[str, Any]:
    role = item["role"]
    parts = item["content"]
    if all(part.get("type") in ("input_text", "output_text", "refusal") for part in parts):
        return {"role": role, "content": _text_of(parts)}
    content: list[dict[str, Any]] = []
    for part in parts:
        if part.get("type") == "input_image":
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("auto", "low", "high"):
                image["detail"] = part["detail"]
            content.append({"type": "image_url", "image_url": image})
        else:
            content.append({"type": "text", "text": _part_text(part)})
    return {"role": role, "content": content}


def _part_text(part: dict[str, Any]) -> str:
    return str(part.get("text") if part.get("type") != "refusal" else part.get("refusal") or "")


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(_part_text(part) for part in parts if part.get("type") != "input_image")


# Request → chat request -----------------------------------------------------------------------


def chat_body(request: ResponsesRequest, items: list[Item]) -> dict[str, Any]:
    """The OpenAI chat request a Responses request means, over `items` (the earlier
    conversation, if any, then this request's input)."""
    messages = chat_messages(items)
    if request.instructions:
        messages.insert(0, {"role": "system", "content": request.instructions})
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": tool.model_dump(exclude={"type"}, exclude_none=True)}
            for tool in request.tools
        ]
    choice = request.tool_choice
    if isinstance(choice, NamedFunction):
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif choice is not None and (request.tools or choice == "none"):
        body["tool_choice"] = choice
    if request.parallel_tool_calls is not None and request.tools:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.text.format if request.text is not None else None
    if isinstance(fmt, TextFormatJSONSchema):
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt is not None and not isinstance(fmt, TextFormatText):
        body["response_format"] = {"type": fmt.type}
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    for key in ("temperature", "top_p", "user"):
        if (value := getattr(request, key)) is not None:
            body[key] = value
    extra = request.model_extra or {}
    for key in _SAMPLING_EXTENSIONS:
        if key in extra:
            body[key] = extra[key]  # checked as a chat request's field
    if request.reasoning is not None and request.reasoning.effort is not None:
        body["reasoning_effort"] = request.reasoning.effort
    body["stream"] = request.stream
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    return body


# Chat completion → Response -------------------------------------------------------------------


def response_object(
    request: ResponsesRequest,
    response_id: str,
    created_at: int,
    *,
    status: str,
    output: list[Item],
    usage: dict[str, Any] | None = None,
    finish_reason: object = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Response object with the request's settings echoed, as OpenAI answers it."""
    fmt = request.text.format if request.text is not None else None
    text: dict[str, Any] = {
        "format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}
    }
    if request.text is not None and request.text.verbosity is not None:
        text["verbosity"] = request.text.verbosity
    choice = request.tool_choice
    reason = _INCOMPLETE.get(str(finish_reason)) if status == "incomplete" else None
    reasoning = request.reasoning
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": None if reason is None else {"reason": reason},
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": request.model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls
        if request.parallel_tool_calls is not None
        else True,
        "previous_response_id": request.previous_response_id,
        "reasoning": {
            "effort": None if reasoning is None else reasoning.effort,
            "summary": None if reasoning is None else reasoning.summary,
        },
        "store": request.store,
        "temperature": request.temperature,
        "text": text,
        "tool_choice": choice.model_dump()
        if isinstance(choice, NamedFunction)
        else (choice or "auto"),
        "tools": [
            {"description": None, "parameters": None, "strict": None, **tool.model_dump()}
            for tool in request.tools or []
        ],
        "top_p": request.top_p,
        "truncation": request.truncation or "disabled",
        "usage": None if usage is None else response_usage(usage),
        "user": request.user,
        "metadata": request.metadata or {},
    }


def response_usage(chat_usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI chat usage in the Responses shape."""
    prompt = _count(chat_usage.get("prompt_tokens"))
    completion = _count(chat_usage.get("completion_tokens"))
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(prompt_details.get("cached_tokens")),
            "cache_write_tokens": 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _count(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": prompt + completion,
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def status_of(finish_reason: object) -> str:
    return "incomplete" if str(finish_reason) in _INCOMPLETE else "completed"


def reasoning_item(item_id: str, text: str, status: str = "completed") -> Item:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> Item:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [output_text(text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> Item:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(body: dict[str, Any]) -> tuple[list[Item], object]:
    """A non-streamed chat completion's output as items (reasoning, message, function calls),
    and its finish_reason."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    status = "incomplete" if status_of(finish) == "incomplete" else "completed"
    items: list[Item] = []
    if reasoning := message.get("reasoning_content"):
        items.append(reasoning_item(new_id("rs"), str(reasoning), status))
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        items.append(message_item(new_id("msg"), str(message.get("content") or ""), status))
    for call in calls:
        function = call.get("function") or {}
        items.append(
            function_call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                str(function.get("name") or ""),
                _arguments(function.get("arguments")),
                status,
            )
        )
    return items, finish


def _arguments(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {})
