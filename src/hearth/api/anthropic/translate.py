"""Messages API requests as OpenAI chat requests, and OpenAI chat completions as Messages API
answers (content blocks, stop reasons, usage)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hearth.api.anthropic.protocol import (
    ContentBlock,
    Conversation,
    DocumentBlock,
    ImageBlock,
    Message,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from hearth.api.image_parts import base64_image_part
from hearth.errors import InvalidRequest

# OpenAI finish_reason → Anthropic stop_reason.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# Anthropic's output_config.effort → OpenAI's reasoning_effort.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def conversation(request: Conversation) -> dict[str, Any]:
    """The OpenAI `messages`, `tools`, `tool_choice` and `parallel_tool_calls` of a request."""
    out: dict[str, Any] = {"messages": []}
    if request.system:
        system = request.system
        text = system if isinstance(system, str) else "\n\n".join(b.text for b in system)
        out["messages"].append({"role": "system", "content": text})
    for i, message in enumerate(request.messages):
        out["messages"] += _messages(message, f"messages[{i}]")
    if request.tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "parameters": tool.input_schema,
                },
            }
            for tool in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        if choice.type == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif choice.type == "none" and not request.tools:
            pass  # nothing to turn off
        else:
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use and request.tools:
            out["parallel_tool_calls"] = False
    return out


def chat_body(request: MessagesRequest, model: str) -> dict[str, Any]:
    """The OpenAI chat request a Messages API request means."""
    body: dict[str, Any] = {"model": model, **conversation(request)}
    body["max_tokens"] = request.max_tokens
    body["stream"] = request.stream
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    for key in ("temperature", "top_p", "top_k"):
        if (value := getattr(request, key)) is not None:
            body[key] = value
    if request.metadata is not None and request.metadata.user_id:
        body["user"] = request.metadata.user_id
    schema = request.output_schema()
    if schema is not None:
        # Structured outputs: the answer's text block holds JSON that follows the schema.
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    effort = request.output_config.effort if request.output_config is not None else None
    if effort is not None:
        body["reasoning_effort"] = _EFFORTS[effort]
    return body


def _messages(message: Message, where: str) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI messages: a user message's tool results become tool
    messages (first, as they answer the previous assistant turn), the rest one user message."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        return [_assistant(message.content, where)]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        at = f"{where}.content[{j}]"
        if isinstance(block, ToolResultBlock):
            results.append(_tool_result(block, at))
        elif isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append(_image(block, at))
        elif isinstance(block, DocumentBlock):
            title = f"{block.title}\n\n" if block.title else ""
            parts.append({"type": "text", "text": title + block.source.data})
        elif isinstance(block, ThinkingBlock):
            continue
        else:
            raise InvalidRequest(
                f"Invalid value for '{at}': a '{block.type}' block belongs in an assistant "
                "message.",
                param=at,
            )
    out = results
    if parts:
        only_text = all(part["type"] == "text" for part in parts)
        text = "\n\n".join(part["text"] for part in parts) if only_text else None
        out.append({"role": "user", "content": text if only_text else parts})
    return out


def _assistant(blocks: list[ContentBlock], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": json.dumps(block.input)},
                }
            )
        elif not isinstance(block, ThinkingBlock):
            at = f"{where}.content[{j}]"
            raise InvalidRequest(
                f"Invalid value for '{at}': an assistant message holds text, tool_use and "
                f"thinking blocks, not '{block.type}'.",
                param=at,
            )
    entry: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        entry["tool_calls"] = calls
    elif entry["content"] is None:
        entry["content"] = ""
    return entry


def _tool_result(block: ToolResultBlock, where: str) -> dict[str, Any]:
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        if any(isinstance(part, ImageBlock) for part in content):
            raise InvalidRequest(
                f"Invalid value for '{where}.content': Hearth does not pass images inside a "
                "tool_result; send them as an image block of the user message.",
                param=f"{where}.content",
            )
        text = "\n\n".join(part.text for part in content if isinstance(part, TextBlock))
    if block.is_error:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _image(block: ImageBlock, where: str) -> dict[str, Any]:
    """An image block as an OpenAI image part: a URL as it is (fetched later for a local model,
    upstream/images.py), base64 data checked here, typed by its bytes rather than the block's
    media_type."""
    source = block.source
    if source.type == "url":
        return {"type": "image_url", "image_url": {"url": source.url}}
    return base64_image_part(source.data, f"{where}.source.data")


def tool_input(arguments: object) -> dict[str, Any]:
    """OpenAI tool call arguments (a JSON string) as a tool_use block's `input` object."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(str(arguments or "{}"))
    except ValueError:
        return {"arguments": arguments}  # not JSON: kept whole rather than lost
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def stop_reason(
    finish_reason: object, choice: dict[str, Any], stop_sequences: list[str] | None
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence). An engine that names the stop string it met (vLLM's
    `stop_reason`) gives `stop_sequence`; llama.cpp does not say, so its stops are `end_turn`."""
    matched = choice.get("stop_reason")
    if finish_reason == "stop" and isinstance(matched, str) and matched in (stop_sequences or []):
        return "stop_sequence", matched
    return _STOP_REASONS.get(str(finish_reason), "end_turn"), None


def thinking_block(text: str) -> dict[str, Any]:
    """An engine's reasoning as a thinking block (no signature: nothing to verify it with)."""
    return {"type": "thinking", "thinking": text, "signature": ""}


def usage(openai_usage: object) -> dict[str, int]:
    given = openai_usage if isinstance(openai_usage, dict) else {}
    return {
        "input_tokens": int(given.get("prompt_tokens") or 0),
        "output_tokens": int(given.get("completion_tokens") or 0),
    }


def message_reply(body: dict[str, Any], model: str, request: MessagesRequest) -> dict[str, Any]:
    """A non-streamed OpenAI chat completion as a Messages API `message`."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        content.append(thinking_block(message["reasoning_content"]))
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or new_id("toolu"),
                "name": function.get("name", ""),
                "input": tool_input(function.get("arguments")),
            }
        )
    finish = choice.get("finish_reason")
    if message.get("tool_calls") and finish == "stop":
        finish = "tool_calls"
    reason, sequence = stop_reason(finish, choice, request.stop_sequences)
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(body.get("usage")),
    }
