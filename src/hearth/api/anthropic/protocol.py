"""Anthropic Messages API wire models (validated before translation) and its error shape.

Unknown fields are accepted and ignored (clients send `metadata`, `thinking`, `service_tier`,
cache-control marks, ...), except those that would change the answer's shape, which Hearth does
not implement (`mcp_servers`, `container`, ...): those are a 400 naming them, not silently
dropped. Known ones are checked so that a bad request gets a 400 naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from hearth.errors import InvalidRequest
from hearth.wire.base import OpenAIBaseModel


class AnthropicModel(OpenAIBaseModel):
    """Base of the Messages API wire models: unknown fields are accepted and logged at debug."""


class TextBlock(AnthropicModel):
    type: Literal["text"]
    text: str


class Base64Source(AnthropicModel):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(AnthropicModel):
    type: Literal["url"]
    url: str


class TextSource(AnthropicModel):
    type: Literal["text"]
    data: str
    media_type: str = "text/plain"


class ImageBlock(AnthropicModel):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]


class DocumentBlock(AnthropicModel):
    """A document; only plain text ones, which become text, are supported."""

    type: Literal["document"]
    source: TextSource
    title: str | None = None


class ToolUseBlock(AnthropicModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


ToolResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(AnthropicModel):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultPart] | None = None
    is_error: bool | None = None


class ThinkingBlock(AnthropicModel):
    """Earlier reasoning sent back by a client; dropped, as the engine cannot check it."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock,
    Field(discriminator="type"),
]


class Message(AnthropicModel):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class Tool(AnthropicModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None

    @model_validator(mode="after")
    def _custom(self) -> Tool:
        if self.type not in (None, "custom"):
            raise ValueError(
                f"'{self.type}' is a server tool, which Hearth does not run; define the tool "
                "with a name, description and input_schema instead"
            )
        if self.input_schema is None:
            raise ValueError("a tool needs 'input_schema'")
        return self


class ToolChoice(AnthropicModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("'name' is required when type is 'tool'")
        return self


class Metadata(AnthropicModel):
    user_id: str | None = None


class Conversation(AnthropicModel):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None

    @model_validator(mode="after")
    def _choice_needs_tools(self) -> Conversation:
        if self.tool_choice is not None and self.tool_choice.type != "none" and not self.tools:
            raise ValueError("'tool_choice' requires 'tools'")
        choice = self.tool_choice
        if (
            choice is not None
            and choice.type == "tool"
            and choice.name not in {tool.name for tool in self.tools or []}
        ):
            raise ValueError(f"'tool_choice' names '{choice.name}', which is not a tool")
        return self


class JSONOutputFormat(AnthropicModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(AnthropicModel):
    format: JSONOutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


# Request fields that would change what the answer holds, which Hearth cannot honour.
UNSUPPORTED_FIELDS = {
    "mcp_servers": "MCP connectors run on Anthropic's servers",
    "container": "code execution containers run on Anthropic's servers",
    "context_management": "context editing changes the conversation on Anthropic's servers",
    "diagnostics": "prompt-cache diagnostics describe Anthropic's cache",
}


class MessagesRequest(Conversation):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    output_format: JSONOutputFormat | None = None  # the structured-outputs beta's name

    def check_supported(self) -> None:
        """A 400 naming the first field that would change the answer's shape unhonoured."""
        for name, why in UNSUPPORTED_FIELDS.items():
            if (self.model_extra or {}).get(name) is not None:
                raise InvalidRequest(
                    f"Hearth does not support '{name}' ({why}); leave it out.", param=name
                )

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer's text must follow, if the client gave one."""
        if self.output_config is not None and self.output_config.format is not None:
            return self.output_config.format.schema_
        return self.output_format.schema_ if self.output_format is not None else None


class CountTokensRequest(Conversation):
    """POST /v1/messages/count_tokens: the conversation, without generation settings."""


# HTTP status → Anthropic error type.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's error shape, from the OpenAI-shaped body."""
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    return {
        "type": "error",
        "error": {"type": error_type(status), "message": str(message or f"HTTP {status}")},
    }
