"""Constrained output on a local engine: a forced tool call (`tool_choice` required or named)
becomes a JSON schema the engine enforces per request, and the engine's JSON answer becomes a
proper tool call again, whole or streamed as tool-call deltas.

One call per answer: the schema admits exactly one `{"name": ..., "arguments": {...}}`, whatever
`parallel_tool_calls` says (a small model asked for an array tends to repeat the call until its
token limit). `response_format` schemas are checked here too, so that one the engine cannot
compile is a 400 naming the field, not an engine error.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hearth.engines.base import Capabilities
from hearth.errors import InvalidRequest, UpstreamStatusError
from hearth.routing.streams import END_MARKER, OpenedStream

# What the engine writes before the arguments: the grammar puts `name` first (its order in the
# schema); llama.cpp also admits the object inside a ```json fence.
_HEAD = re.compile(
    r'\s*(?:```(?:json)?\s*)?\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:'
)
# Words of the engine's complaint about a schema it could not turn into a grammar.
_SCHEMA_TROUBLE = ("json schema", "grammar", "schema conversion", "pattern", "$ref")


@dataclass(frozen=True)
class ForcedCall:
    """How to read the engine's answer back as the one tool call it was made to write."""

    names: tuple[str, ...]
    param: str  # the request field a schema problem is blamed on

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A whole chat completion whose message content is the call's JSON, as a tool call."""
        for choice in body.get("choices") or []:
            message = choice.get("message") or {}
            text = message.get("content") or ""
            call = _parse_call(text)
            if call is None or call[0] not in self.names:
                raise _incomplete(choice.get("finish_reason"), self.names)
            name, arguments = call
            message["content"] = None
            message["tool_calls"] = [_call_delta(name, json.dumps(arguments, ensure_ascii=False))]
            choice["message"] = message
            choice["finish_reason"] = "tool_calls"
        return body

    def stream(self, opened: OpenedStream) -> OpenedStream:
        """The engine's stream with its content rewritten as one tool call's deltas."""
        scanner = _CallScanner(self.names)
        first = scanner.events(opened.first)

        async def rest() -> AsyncIterator[bytes]:
            # A call the answer left incomplete ends the stream with an error event, after
            # the finish and usage chunks (the relay turns the exception into that event).
            if scanner.failure is not None:
                raise scanner.failure
            async for block in opened.rest:
                out = scanner.events(block)
                if out:
                    yield out
                if scanner.failure is not None:
                    raise scanner.failure

        return OpenedStream(first, rest(), opened.hide_usage, opened.on_crash)

    def schema_error(self, exc: UpstreamStatusError) -> InvalidRequest | None:
        return schema_error(exc, self.param)


def constrain(
    fields: dict[str, Any], capabilities: Capabilities
) -> tuple[dict[str, Any], ForcedCall | None]:
    """The engine request for `fields`, and how to read its answer back (None: as it is).
    Only an engine that takes a per-request schema is constrained; others get `fields`."""
    if not capabilities.json_schema:
        return fields, None
    check_response_format(fields)
    tools = fields.get("tools") or []
    choice = fields.get("tool_choice")
    if choice == "required":
        chosen = list(enumerate(tools))
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [(i, tool) for i, tool in enumerate(tools) if _tool_name(tool) == name]
        if not chosen:
            raise InvalidRequest(
                f"Invalid value for 'tool_choice': it names '{name}', which is not one of 'tools'.",
                param="tool_choice",
            )
    else:
        return fields, None
    schemas = [call_schema(tool, f"tools[{i}].function.parameters") for i, tool in chosen]
    out = {
        k: v
        for k, v in fields.items()
        if k not in ("tool_choice", "response_format", "grammar", "json_schema")
    }
    # The tools stay in the prompt so the model sees them; "none" keeps the engine's own
    # tool-call parser off, which would otherwise look for the template's call syntax.
    out["tool_choice"] = "none"
    out["json_schema"] = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    param = f"tools[{chosen[0][0]}].function.parameters" if len(chosen) == 1 else "tools"
    return out, ForcedCall(tuple(_tool_name(tool) for _, tool in chosen), param)


def call_schema(tool: dict[str, Any], where: str) -> dict[str, Any]:
    """The schema of one call of `tool`: its name, then arguments that match its parameters."""
    function = tool.get("function") or {}
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    check_schema(parameters, where)
    return {
        "type": "object",
        "properties": {"name": {"const": function.get("name")}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def check_response_format(fields: dict[str, Any]) -> None:
    fmt = fields.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is not None:
            check_schema(schema, "response_format.json_schema.schema")


def check_schema(schema: object, where: str) -> None:
    """What Hearth can tell of a schema before the engine compiles it: an object (or true),
    with only local `$ref`s (the engine fetches nothing)."""
    if schema is True or schema == {}:
        return
    if not isinstance(schema, dict):
        raise InvalidRequest(
            f"Invalid value for '{where}': a JSON schema must be an object.", param=where
        )
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise InvalidRequest(
                f"Invalid value for '{where}': '$ref' {ref!r} points outside the schema; only "
                "local references ('#/...') are supported.",
                param=where,
            )


def schema_error(exc: UpstreamStatusError, param: str) -> InvalidRequest | None:
    """The engine's refusal of a schema as a 400 naming the field it came from, else None."""
    text = exc.message.lower()
    if exc.status_code >= 500 or not any(word in text for word in _SCHEMA_TROUBLE):
        return None
    detail = exc.message.strip().splitlines()
    said = "; ".join(line.strip() for line in detail if line.strip())[:300]
    return InvalidRequest(
        f"Invalid value for '{param}': the engine cannot enforce this JSON schema ({said}).",
        param=param,
    )


def _refs(schema: object) -> list[str]:
    if isinstance(schema, dict):
        found = [schema["$ref"]] if isinstance(schema.get("$ref"), str) else []
        return found + [ref for value in schema.values() for ref in _refs(value)]
    if isinstance(schema, list):
        return [ref for value in schema for ref in _refs(value)]
    return []


def _tool_name(tool: dict[str, Any]) -> str:
    return str((tool.get("function") or {}).get("name") or "")


def _call_delta(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _parse_call(text: str) -> tuple[str, Any] | None:
    body = text.strip()
    if body.startswith("```"):
        body = body.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        call = json.loads(body)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    if "arguments" not in call:
        return None
    return call["name"], call["arguments"]


def _incomplete(finish: object, names: tuple[str, ...]) -> InvalidRequest:
    if finish == "length":
        return InvalidRequest(
            "The answer reached the token limit before the forced tool call "
            f"({' or '.join(names)}) was complete; raise 'max_tokens' (or "
            "'max_completion_tokens').",
            param="max_tokens",
            code="tool_call_incomplete",
        )
    return InvalidRequest(
        "The engine did not write the forced tool call "
        f"({' or '.join(names)}); its answer was not a call of that tool.",
        param="tool_choice",
        code="tool_call_invalid",
    )


@dataclass
class _CallScanner:
    """Reads the call's JSON as it streams: once the name is known it is sent, then the
    arguments as they come (the closing brace of the call and anything after are dropped)."""

    names: tuple[str, ...]
    text: str = ""
    name: str | None = None
    position: int = 0  # text[:position] is decided
    depth: int = 0
    started: bool = False
    in_string: bool = False
    escaped: bool = False
    done: bool = False
    finish: object = None
    upstream_failed: bool = False  # the engine's own error event went through
    failure: InvalidRequest | None = None  # the stream ended without a complete call

    def events(self, block: bytes) -> bytes:
        out: list[bytes] = []
        for event in re.split(rb"\r?\n\r?\n", block):
            if not event.strip() or self.failure is not None:
                continue
            rewritten = self._event(event.strip())
            if rewritten is not None:
                out.append(rewritten + b"\n\n")
        return b"".join(out)

    def _event(self, event: bytes) -> bytes | None:
        if event == END_MARKER:
            if self.finish != "tool_calls" and not self.upstream_failed:
                self.failure = _incomplete(self.finish, self.names)
                return None
            return event
        if not event.startswith(b"data:"):
            return event
        try:
            chunk = json.loads(event[5:])
        except ValueError:
            return event
        if not isinstance(chunk, dict) or not chunk.get("choices"):
            self.upstream_failed |= isinstance(chunk, dict) and "error" in chunk
            return event  # usage, timings or an error: unchanged
        for choice in chunk["choices"]:
            self._choice(choice)
        chunk["choices"] = [c for c in chunk["choices"] if c.get("delta") or c.get("finish_reason")]
        if not chunk["choices"]:
            return None
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode()

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        content = delta.pop("content", None)
        calls = self.feed(content) if isinstance(content, str) and content else []
        if "role" in delta:
            delta["content"] = None
        if calls:
            delta["tool_calls"] = calls
        choice["delta"] = delta
        finish = choice.get("finish_reason")
        if finish:
            complete = self.done and self.name in self.names
            self.finish = "tool_calls" if complete else finish
            choice["finish_reason"] = self.finish

    def feed(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        out: list[dict[str, Any]] = []
        if self.name is None:
            head = _HEAD.match(self.text)
            if head is None:
                return out
            self.name = json.loads(f'"{head.group(1)}"')
            self.position = head.end()
            call = _call_delta(self.name, "")
            out.append({"index": 0, **call})
        fragment = self._arguments()
        if fragment:
            out.append({"index": 0, "function": {"arguments": fragment}})
        return out

    def _arguments(self) -> str:
        """The new part of the arguments value, up to its end."""
        start = self.position
        emitted: list[str] = []
        for char in self.text[start:]:
            self.position += 1
            if self.done:
                continue
            if not self.started:
                if char.isspace():
                    continue
                self.started = True
            emitted.append(char)
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                continue
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
        return "".join(emitted)
