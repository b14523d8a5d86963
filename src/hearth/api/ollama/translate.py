"""Ollama requests as OpenAI request bodies: messages, images, tools, `format`, `options` and
`keep_alive`; a `template` on `/api/generate` is rendered by `hearth.api.ollama.template`."""

from __future__ import annotations

import json
import logging
from typing import Any

from hearth.api.image_parts import base64_image_part
from hearth.api.ollama.protocol import (
    ChatRequest,
    GenerateRequest,
    Message,
    Options,
    keep_alive_seconds,
    not_supported,
)
from hearth.api.ollama.template import render_template
from hearth.errors import InvalidRequest

log = logging.getLogger(__name__)

# Ollama option → the OpenAI (or llama.cpp extension) request field it becomes.
_OPTION_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "num_keep": "n_keep",
}


def sampling_fields(
    request: ChatRequest | GenerateRequest, model: str, stream: bool
) -> dict[str, Any]:
    """The OpenAI fields every generation shares: model, stream, sampling, format, keep_alive."""
    fields: dict[str, Any] = {"model": model, "stream": stream}
    if stream:
        fields["stream_options"] = {"include_usage": True}
    fields.update(option_fields(request.options))
    if request.keep_alive is not None:
        fields["keep_alive"] = keep_alive_seconds(request.keep_alive)
    if request.format == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(request.format, dict):
        fields["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": request.format},
        }
    return fields


def reasoning_fields(think: bool | str) -> dict[str, Any]:
    """Ollama's `think` as OpenAI's `reasoning_effort`: false turns reasoning off ("none"), a
    level is passed on, true leaves the model's default. A model that does not reason ignores
    it; its reasoning comes back as `message.thinking`."""
    if think is False:
        return {"reasoning_effort": "none"}
    if isinstance(think, str):
        return {"reasoning_effort": think}
    return {}


def option_fields(options: Options | None) -> dict[str, Any]:
    if options is None:
        return {}
    given = options.model_dump(exclude_none=True)
    fields = {_OPTION_FIELDS[k]: v for k, v in given.items() if k in _OPTION_FIELDS}
    predict = given.get("num_predict")
    if predict is not None and predict > 0:  # -1: no limit, -2: fill the context
        fields["max_tokens"] = predict
    elif predict == 0:
        raise InvalidRequest(
            "Invalid value for 'options.num_predict': 0 generates nothing; use -1 for no limit.",
            param="options.num_predict",
        )
    if options.model_extra:
        log.debug("ignoring Ollama options %s", sorted(options.model_extra))
    return fields


def image_url(data: str, where: str) -> dict[str, Any]:
    """A base64 image (as Ollama clients send them) as an OpenAI image part with a data URI."""
    return base64_image_part(data, where)


def content(text: str, images: list[str] | None, where: str) -> str | list[dict[str, Any]]:
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts += [image_url(image, f"{where}.images[{i}]") for i, image in enumerate(images)]
    return parts


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Ollama chat messages as OpenAI ones. Tool calls get ids (Ollama has none), and each tool
    result answers the earliest unanswered call of its tool name (else the earliest call)."""
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (call id, tool name) not yet answered
    calls = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        entry: dict[str, Any] = {"role": message.role}
        if message.role == "assistant" and message.tool_calls:
            entry["content"] = message.content or None
            entry["tool_calls"] = []
            pending = []
            for call in message.tool_calls:
                calls += 1
                call_id = f"call_{calls}"
                pending.append((call_id, call.function.name))
                entry["tool_calls"].append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": json.dumps(call.function.arguments),
                        },
                    }
                )
        elif message.role == "tool":
            entry["content"] = message.content
            match = next((p for p in pending if p[1] == message.tool_name), None)
            match = match or (pending[0] if pending else None)
            if match is not None:
                pending.remove(match)
                entry["tool_call_id"] = match[0]
            if message.tool_name:
                entry["name"] = message.tool_name
        else:
            entry["content"] = content(message.content, message.images, where)
        out.append(entry)
    return out


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    body = sampling_fields(request, model, request.stream)
    body["messages"] = chat_messages(request.messages)
    if request.think is not None:
        body.update(reasoning_fields(request.think))
    if request.tools:
        body["tools"] = request.tools
    if isinstance(request.tool_choice, str):
        body["tool_choice"] = request.tool_choice
    elif request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice.model_dump()
    if request.logprobs is not None:
        body["logprobs"] = request.logprobs
    if request.top_logprobs is not None:
        body["top_logprobs"] = request.top_logprobs
    return body


def generate_body(request: GenerateRequest, model: str) -> tuple[str, str, dict[str, Any]]:
    """(OpenAI path, capability, body) for an `/api/generate` request. Without `raw` the prompt
    is a user message under the model's chat template; with `raw` (or a `template`, rendered
    here) it is sent as is to the text completions endpoint."""
    if request.suffix:
        raise not_supported(
            "'suffix' (fill-in-the-middle) on /api/generate",
            "send the text before the gap as the prompt",
        )
    body = sampling_fields(request, model, request.stream)
    prompt = request.prompt or ""
    if request.template is not None and not request.raw:
        prompt = render_template(request.template, request.system or "", prompt)
    if request.raw or request.template is not None:
        if request.images:
            raise not_supported(
                "images in a raw prompt", "send them without 'raw' so the chat template places them"
            )
        if request.logprobs:
            body["logprobs"] = request.top_logprobs or 1
        body["prompt"] = prompt
        return "/v1/completions", "completion", body
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": content(prompt, request.images, "prompt")})
    body["messages"] = messages
    if request.think is not None:
        body.update(reasoning_fields(request.think))
    if request.logprobs is not None:
        body["logprobs"] = request.logprobs
    if request.top_logprobs is not None:
        body["top_logprobs"] = request.top_logprobs
    return "/v1/chat/completions", "chat", body
