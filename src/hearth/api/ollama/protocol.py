"""Ollama's wire models (requests validated before translation) and its error shape.

Like the OpenAI models, these accept unknown fields: Ollama clients send options and fields of
newer releases (`think`, `width`, ...) that Hearth has no use for.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hearth.errors import InvalidRequest
from hearth.wire.base import OpenAIBaseModel


class OllamaModel(OpenAIBaseModel):
    """Base of Ollama's wire models: unknown fields are accepted and logged at debug."""


class Options(OllamaModel):
    """Ollama's `options`. Sampling options map to the OpenAI request; load-time options
    (num_ctx, num_gpu, num_thread, ...) are accepted and ignored: in Hearth they are per-model
    settings (engine.ctx_size, engine.gpu_layers, engine.threads)."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    typical_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    num_predict: int | None = Field(None, ge=-2)
    stop: list[str] | None = Field(None, max_length=16)
    repeat_penalty: float | None = Field(None, ge=0)
    repeat_last_n: int | None = Field(None, ge=-1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    mirostat: int | None = Field(None, ge=0, le=2)
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    num_keep: int | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, stop: object) -> object:
        return [stop] if isinstance(stop, str) else stop


KeepAlive = str | float | int


class _NamesAModel(OllamaModel):
    """A request naming its model as `model`, or as `name` as older clients do."""

    @model_validator(mode="before")
    @classmethod
    def _name_is_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" not in data and "name" in data:
            return {**data, "model": data["name"]}
        return data


class _Generation(_NamesAModel):
    model: str = Field(min_length=1)
    stream: bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: KeepAlive | None) -> KeepAlive | None:
        if value is not None:
            keep_alive_seconds(value)  # raises ValueError naming the forms
        return value


class ToolCallFunction(OllamaModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(OllamaModel):
    function: ToolCallFunction


class Message(OllamaModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class NamedFunction(OllamaModel):
    name: str


class NamedToolChoice(OllamaModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatRequest(_Generation):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    # Hearth's extension (Ollama has none): OpenAI's tool_choice, so a client can force a call.
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None

    @model_validator(mode="after")
    def _choice_needs_tools(self) -> ChatRequest:
        if self.tool_choice not in (None, "auto", "none") and not self.tools:
            raise ValueError("'tool_choice' requires 'tools'")
        return self


class GenerateRequest(_Generation):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None
    think: bool | Literal["low", "medium", "high"] | None = None


class ModelRequest(_NamesAModel):
    """`{"model": NAME}` (or the older `{"name": NAME}`): show, delete."""

    model: str = Field(min_length=1)
    verbose: bool | None = None


class PullRequest(ModelRequest):
    stream: bool = True
    insecure: bool | None = None


class CopyRequest(OllamaModel):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class CreateRequest(_NamesAModel):
    """`POST /api/create` in its current shape: a preset over the model `from`. Hearth does
    not build models from blobs (`files`, `quantize`) and refuses those fields by name."""

    model: str = Field(min_length=1)
    base: str | None = Field(None, alias="from", min_length=1)
    system: str | None = None
    parameters: dict[str, Any] | None = None
    template: str | None = None
    adapters: dict[str, str] | None = None
    files: dict[str, str] | None = None
    quantize: str | None = None
    messages: list[Any] | None = None
    modelfile: str | None = None  # the old API
    license: str | list[str] | None = None
    stream: bool = True


class EmbedRequest(ModelRequest):
    input: str | list[str] | None = None  # /api/embed
    prompt: str | None = None  # /api/embeddings
    keep_alive: KeepAlive | None = None
    truncate: bool | None = None  # inputs longer than the context: the engine's own behaviour
    dimensions: int | None = Field(None, ge=1)
    options: dict[str, Any] | None = None


# Go's time.ParseDuration units, which Ollama's keep_alive strings use ("5m", "1h30m", "-1s").
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def keep_alive_seconds(value: KeepAlive) -> float:
    """Ollama's keep_alive in seconds: a number of seconds, or a Go duration such as "5m" or
    "1h30m"; negative keeps the model loaded, 0 unloads it after the request."""
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration such as '5m', 300 or -1")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if re.fullmatch(r"\d+(?:\.\d+)?", body):
        return sign * float(body)
    parts = _GO_PART.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"{value!r} is not a duration; use for example '5m', '1h30m', 300 or -1")
    return sign * sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def error_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """Ollama's error shape, `{"error": "message"}`, from the OpenAI-shaped body."""
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return {"error": str(message or f"HTTP {status}")}


def not_supported(what: str, hint: str = "") -> InvalidRequest:
    return InvalidRequest(f"Hearth does not support {what}{'; ' + hint if hint else ''}.")
