"""Cascades: the cheapest deployment answers first, and its answer is kept only if it passes the
route's checks; otherwise the next one answers.

The checks look at one whole answer (an OpenAI chat completion or text completion) and the
request that asked for it:

    non_empty         some text, or a tool call
    not_truncated     not cut off by max_tokens (finish_reason "length")
    valid_json        valid JSON, and valid against the request's response_format schema if it
                      has one (only when the request asked for JSON)
    tool_arguments    every tool call names an offered tool and its arguments are valid JSON
                      that the tool's parameter schema accepts
    min_logprob       the average token log-probability is at least this, where the deployment
                      reports log-probabilities (one that does not is not judged by it)
    pattern           the text matches this regular expression (the operator's, compiled once)

A failed check names itself in a bounded set (the metric label and the trace say which), so what
made a cascade escalate can be counted without putting answer text anywhere.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import AsyncGenerator
from typing import Any

import jsonschema
import re2
import referencing.exceptions

from hearth.config import CascadeSettings

# Reasons an answer is rejected: the bounded set of the escalation metric's `reason` label.
REJECTIONS = (
    "empty",
    "truncated",
    "invalid_json",
    "schema_mismatch",
    "invalid_tool_call",
    "low_logprob",
    "pattern_mismatch",
)
# The longest answer text the pattern is matched against: the operator's pattern, but an
# upstream's answer (a runaway model could send megabytes).
PATTERN_TEXT_LIMIT = 64 * 1024


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re2._Regexp:
    """The route's pattern, compiled once (it was checked for RE2 when the settings loaded)."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def rejection(checks: CascadeSettings, fields: dict[str, Any], body: dict[str, Any]) -> str | None:
    """Why this answer fails the checks (one of REJECTIONS), or None if it passes. Every choice
    of an n > 1 answer must pass. Schemas come from the request, so the router runs this off the
    event loop: a client's costly schema costs only its own request."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return "empty"
    for choice in choices:
        reason = _choice_rejection(checks, fields, choice if isinstance(choice, dict) else {})
        if reason is not None:
            return reason
    return None


def _choice_rejection(
    checks: CascadeSettings, fields: dict[str, Any], choice: dict[str, Any]
) -> str | None:
    message = choice.get("message")
    if isinstance(message, dict):
        text = message.get("content")
        calls = message.get("tool_calls") or []
    else:  # a text completion
        text, calls = choice.get("text"), []
    text = text if isinstance(text, str) else ""
    if checks.non_empty and not text.strip() and not calls:
        return "empty"
    if checks.not_truncated and choice.get("finish_reason") == "length":
        return "truncated"
    if checks.tool_arguments and calls and not _tool_calls_valid(calls, fields.get("tools")):
        return "invalid_tool_call"
    if checks.valid_json and not calls:
        reason = _json_rejection(text, fields.get("response_format"))
        if reason is not None:
            return reason
    if checks.min_logprob is not None:
        average = _average_logprob(choice.get("logprobs"))
        if average is not None and average < checks.min_logprob:
            return "low_logprob"
    if (
        checks.pattern is not None
        and not calls
        and _compiled(checks.pattern).search(text[:PATTERN_TEXT_LIMIT]) is None
    ):
        return "pattern_mismatch"
    return None


def _json_rejection(text: str, response_format: object) -> str | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return "invalid_json"
    if kind == "json_object":
        return None if isinstance(value, dict) else "invalid_json"
    schema = (response_format.get("json_schema") or {}).get("schema")
    if isinstance(schema, dict) and not _valid(value, schema):
        return "schema_mismatch"
    return None


def _tool_calls_valid(calls: object, tools: object) -> bool:
    offered: dict[str, Any] = {}
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            offered[function["name"]] = function.get("parameters")
    if not isinstance(calls, list):
        return False
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or function.get("name") not in offered:
            return False
        try:
            arguments = json.loads(function.get("arguments") or "")
        except (TypeError, ValueError):
            return False
        if not isinstance(arguments, dict):
            return False
        schema = offered[function["name"]]
        if isinstance(schema, dict) and not _valid(arguments, schema):
            return False
    return True


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    """Whether `value` is valid against `schema`. A schema jsonschema cannot use (the client's
    mistake, not the answer's) judges nothing."""
    try:
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
        return bool(validator(schema).is_valid(value))
    except (
        jsonschema.SchemaError,
        jsonschema.exceptions.UnknownType,
        referencing.exceptions.Unresolvable,  # a $ref to elsewhere: Hearth fetches nothing
        RecursionError,
    ):
        return True


def _average_logprob(logprobs: object) -> float | None:
    """Mean log-probability of the answer's tokens, from OpenAI chat logprobs
    ({"content": [{"logprob": …}, …]}) or completion logprobs ({"token_logprobs": […]})."""
    if not isinstance(logprobs, dict):
        return None
    values: list[object]
    if isinstance(logprobs.get("content"), list):
        values = [item.get("logprob") for item in logprobs["content"] if isinstance(item, dict)]
    elif isinstance(logprobs.get("token_logprobs"), list):
        values = list(logprobs["token_logprobs"])
    else:
        return None
    numbers = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(float(v))]
    return sum(numbers) / len(numbers) if numbers else None


def upstream_fields(checks: CascadeSettings, fields: dict[str, Any]) -> dict[str, Any]:
    """What each cascade attempt sends: never streamed (an answer is judged whole), and asking
    for log-probabilities when a check needs them."""
    sent = {key: value for key, value in fields.items() if key != "stream_options"}
    sent["stream"] = False
    if checks.min_logprob is not None and not fields.get("logprobs"):
        sent["logprobs"] = True
    return sent


def as_client_body(fields: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The accepted answer as the client asked for it: log-probabilities removed if only the
    check wanted them."""
    if fields.get("logprobs"):
        return body
    for choice in body.get("choices") or []:
        if isinstance(choice, dict):
            choice.pop("logprobs", None)
    return body


async def as_stream(body: dict[str, Any], include_usage: bool) -> AsyncGenerator[bytes, None]:
    """A whole chat completion as the chunks a streamed one would have sent: one chunk per choice
    with all its content and tool calls, a usage chunk when asked for, then [DONE]."""
    base = {
        "id": body.get("id", "chatcmpl-cascade"),
        "object": "chat.completion.chunk",
        "created": body.get("created", 0),
        "model": body.get("model"),
    }
    for choice in body.get("choices") or []:
        message = dict(choice.get("message") or {})
        delta: dict[str, Any] = {"role": message.get("role", "assistant")}
        for name in ("content", "reasoning_content", "refusal"):
            if message.get(name) is not None:
                delta[name] = message[name]
        calls = message.get("tool_calls")
        if calls:
            delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(calls)]
        entry: dict[str, Any] = {
            "index": choice.get("index", 0),
            "delta": delta,
            "finish_reason": choice.get("finish_reason"),
        }
        if choice.get("logprobs") is not None:
            entry["logprobs"] = choice["logprobs"]
        yield _event({**base, "choices": [entry]})
    if include_usage and isinstance(body.get("usage"), dict):
        yield _event({**base, "choices": [], "usage": body["usage"]})
    yield b"data: [DONE]\n\n"


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
