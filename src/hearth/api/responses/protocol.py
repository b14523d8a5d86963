"""Responses API wire models (POST /v1/responses), validated before translation: each known
field is checked, so a bad request gets a 400 naming it in OpenAI's error shape. Unknown fields
are accepted (clients send `include`, `prompt_cache_key`, `service_tier`, ...) unless they ask for
something Hearth cannot do that would change the answer's shape; those are refused by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hearth.wire.base import FreeForm, OpenAIBaseModel

MAX_ITEMS = 4096
MAX_METADATA = 16  # pairs, as OpenAI


class ResponsesModel(OpenAIBaseModel):
    """Base of the Responses API wire models: unknown fields are accepted and logged at debug."""


class InputText(ResponsesModel):
    type: Literal["input_text"]
    text: str


class OutputText(ResponsesModel):
    type: Literal["output_text"]
    text: str


class Refusal(ResponsesModel):
    type: Literal["refusal"]
    refusal: str


class InputImage(ResponsesModel):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None

    @model_validator(mode="after")
    def _by_url(self) -> InputImage:
        if not self.image_url:
            raise ValueError(
                "an image needs 'image_url' (a URL or a data: URL); Hearth has no files"
            )
        return self


def _by_type(value: Any) -> str | None:
    """A tagged union's tag: the class name for the item's `type` (capitalised, so that error
    locations name fields, not union members)."""
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return _CLASS_OF.get(kind) if isinstance(kind, str) else None


_CLASS_OF = {
    "input_text": "InputText",
    "output_text": "OutputText",
    "refusal": "Refusal",
    "input_image": "InputImage",
    "message": "MessageItem",
    "function_call": "FunctionCallItem",
    "function_call_output": "FunctionCallOutputItem",
    "reasoning": "ReasoningItem",
    "text": "TextFormatText",
    "json_object": "TextFormatJSONObject",
    "json_schema": "TextFormatJSONSchema",
}


def _unknown(what: str, *kinds: str) -> Discriminator:
    names = ", ".join(f"'{kind}'" for kind in kinds)
    return Discriminator(
        _by_type,
        custom_error_type="unsupported_type",
        custom_error_message=f"Hearth supports {what} of type {names}",
    )


ContentPart = Annotated[
    Annotated[InputText, Tag("InputText")]
    | Annotated[OutputText, Tag("OutputText")]
    | Annotated[Refusal, Tag("Refusal")]
    | Annotated[InputImage, Tag("InputImage")],
    _unknown("content parts", "input_text", "output_text", "refusal", "input_image"),
]


class MessageItem(ResponsesModel):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(ResponsesModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


OutputPart = Annotated[
    Annotated[InputText, Tag("InputText")]
    | Annotated[OutputText, Tag("OutputText")]
    | Annotated[InputImage, Tag("InputImage")],
    _unknown("function output parts", "input_text", "output_text", "input_image"),
]


class FunctionCallOutputItem(ResponsesModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[OutputPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItem(ResponsesModel):
    """Earlier reasoning sent back by a client: kept in the stored input, not sent on."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[FreeForm] = Field(default_factory=list)
    content: list[FreeForm] | None = None
    encrypted_content: str | None = None


def _message_by_default(item: Any) -> Any:
    """An item without a type but with a role is a message (OpenAI's "easy" input message)."""
    if isinstance(item, dict) and "type" not in item and "role" in item:
        return {"type": "message", **item}
    return item


InputItem = Annotated[
    Annotated[
        Annotated[MessageItem, Tag("MessageItem")]
        | Annotated[FunctionCallItem, Tag("FunctionCallItem")]
        | Annotated[FunctionCallOutputItem, Tag("FunctionCallOutputItem")]
        | Annotated[ReasoningItem, Tag("ReasoningItem")],
        _unknown("input items", "message", "function_call", "function_call_output", "reasoning"),
    ],
    BeforeValidator(_message_by_default),
]


class FunctionTool(ResponsesModel):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: FreeForm | None = None
    strict: bool | None = None


def _function_tools_only(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") not in (None, "function"):
        raise ValueError(
            f"'{tool.get('type')}' is a hosted tool, which Hearth does not run; only function "
            "tools (type 'function') are supported"
        )
    return tool


class NamedFunction(ResponsesModel):
    type: Literal["function"]
    name: str


class TextFormatText(ResponsesModel):
    type: Literal["text"]


class TextFormatJSONObject(ResponsesModel):
    type: Literal["json_object"]


class TextFormatJSONSchema(ResponsesModel):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    schema_: FreeForm = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    Annotated[TextFormatText, Tag("TextFormatText")]
    | Annotated[TextFormatJSONObject, Tag("TextFormatJSONObject")]
    | Annotated[TextFormatJSONSchema, Tag("TextFormatJSONSchema")],
    _unknown("text formats", "text", "json_object", "json_schema"),
]


class TextConfig(ResponsesModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(ResponsesModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


def _metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > MAX_METADATA:
        raise ValueError(f"at most {MAX_METADATA} key-value pairs are allowed")
    for key, text in value.items():
        if len(key) > 64:
            raise ValueError(f"the key '{key[:20]}...' is longer than 64 characters")
        if len(text) > 512:
            raise ValueError(f"the value of '{key[:64]}' is longer than 512 characters")
    return value


# Fields that would change the answer's shape in ways Hearth does not provide, with why.
_REFUSED = {
    "background": "background responses are not supported; send the request and wait (or stream)",
    "conversation": "conversation objects are not supported; use 'previous_response_id'",
    "prompt": "stored prompt templates are not supported; send 'input' and 'instructions'",
}


class ResponsesRequest(ResponsesModel):
    model: str = Field(min_length=1)
    input: str | list[InputItem] = Field(min_length=1, max_length=MAX_ITEMS)
    instructions: str | None = None
    tools: list[Annotated[FunctionTool, BeforeValidator(_function_tools_only)]] | None = Field(
        None, max_length=128
    )
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    metadata: dict[str, str] | None = None
    reasoning: ReasoningConfig | None = None
    store: bool = True
    previous_response_id: str | None = None
    stream: bool = False
    user: str | None = Field(None, max_length=256)
    top_logprobs: int | None = Field(None, ge=0, le=0)
    truncation: Literal["auto", "disabled"] | None = None
    # Refused when set: they would change the answer in ways Hearth does not provide.
    background: Any = None
    conversation: Any = None
    prompt: Any = None

    @field_validator("background", "conversation", "prompt")
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in (None, False):
            raise ValueError(_REFUSED[str(info.field_name)])
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _metadata(value)

    @model_validator(mode="after")
    def _consistent(self) -> ResponsesRequest:
        choice = self.tool_choice
        if choice not in (None, "none", "auto") and not self.tools:
            raise ValueError("'tool_choice' requires 'tools'")
        if isinstance(choice, NamedFunction) and choice.name not in {
            tool.name for tool in self.tools or []
        }:
            raise ValueError(f"'tool_choice' names '{choice.name}', which is not a tool")
        return self


InputItems = list[dict[str, Any]]
