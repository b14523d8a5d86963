"""The chat completion request (POST /v1/chat/completions), validated before any engine sees it;
the Ollama and Anthropic translators produce it too."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from hearth.wire.base import FreeForm, OpenAIBaseModel, SamplingParams

# More would keep an engine's chat-template step busy for minutes; no real conversation needs it.
MAX_MESSAGES = 4096
MAX_TOOLS = 128  # OpenAI's own limit
# Images in one request (Anthropic's own limit): each costs the engine an encoder pass, and a
# body of tiny ones could otherwise hold a local model for minutes.
MAX_IMAGES = 100
VISION = frozenset({"vision"})
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class TextPart(OpenAIBaseModel):
    type: Literal["text"]
    text: str


class ImageURL(OpenAIBaseModel):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(OpenAIBaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(OpenAIBaseModel):
    name: str
    arguments: str


class ToolCall(OpenAIBaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(OpenAIBaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a '{self.role}' message needs 'content'")
        return self


class FunctionDefinition(OpenAIBaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: FreeForm | None = None
    strict: bool | None = None


class Tool(OpenAIBaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(OpenAIBaseModel):
    name: str


class NamedToolChoice(OpenAIBaseModel):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(OpenAIBaseModel):
    name: str = "response"
    schema_: FreeForm | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIBaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("'json_schema' is required when type is 'json_schema'")
        return self


class ChatCompletionRequest(SamplingParams):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # Passed on: llama-server hands it to the chat template ("none" turns thinking off), which
    # a model that does not reason ignores; remotes read it as OpenAI does.
    reasoning_effort: ReasoningEffort | None = None

    @field_validator("messages")
    @classmethod
    def _image_count(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        seen = 0
        for i, message in enumerate(messages):
            if not isinstance(message.content, list):
                continue
            for j, part in enumerate(message.content):
                seen += isinstance(part, ImagePart)
                if seen > MAX_IMAGES:
                    raise ValueError(
                        f"messages[{i}].content[{j}] is image {seen}; one request may carry at "
                        f"most {MAX_IMAGES} images"
                    )
        return messages

    def inputs(self) -> frozenset[str]:
        for message in self.messages:
            if isinstance(message.content, list) and any(
                isinstance(part, ImagePart) for part in message.content
            ):
                return VISION
        return frozenset()

    @model_validator(mode="after")
    def _tool_choice_needs_tools(self) -> ChatCompletionRequest:
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise ValueError("'tool_choice' requires 'tools'")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("'top_logprobs' requires 'logprobs' to be true")
        return self
