"""Wire models shared by the OpenAI endpoints, and request parsing with errors that name the field.

Request models accept unknown fields (clients send vendor extras such as `top_k` or `min_p`, which
llama.cpp understands) and forward them; known fields are validated before an engine sees them,
since llama-server accepts several invalid values silently or answers them with a 500.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hearth.errors import InvalidRequest

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound="OpenAIBaseModel")


class OpenAIBaseModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_extra_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            log.debug(
                "%s: passing through extra fields %s", type(self).__name__, sorted(self.model_extra)
            )
        return self


class StreamOptions(OpenAIBaseModel):
    include_usage: bool = False


class ModelRequest(OpenAIBaseModel):
    """Any request addressed to a model: what the router needs from it."""

    model: str = Field(min_length=1)


class SamplingParams(ModelRequest):
    """Fields shared by chat and legacy completions."""

    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        # llama-server miscounts usage for n > 1; until choices are fanned out, say so plainly.
        if n is not None and n > 1:
            raise ValueError("only n=1 is supported; send several requests for several choices")
        return n

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 16:
            raise ValueError("at most 16 stop sequences are allowed")
        return stop


def parse_request(model_cls: type[ModelT], body: bytes) -> ModelT:
    """Validate a JSON body, turning the first problem into a 400 that names the field."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return model_cls.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid_request(exc) from None


def _invalid_request(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    # Within a union the deepest error is the telling one (the list branch that got the furthest,
    # not "should be a valid string").
    first = max(errors, key=lambda error: len(error["loc"]))
    if first["type"] == "json_invalid":
        return InvalidRequest(
            f"The request body is not valid JSON: {first['ctx'].get('error', 'parse error')}."
        )
    if first["type"] == "model_type" and not first["loc"]:
        return InvalidRequest("The request body must be a JSON object.")
    param = _dotted(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    # Union branches report one problem several times; count the distinct fields instead.
    others = len({_dotted(error["loc"]).split("[")[0] for error in errors} - {param.split("[")[0]})
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    if param:
        return InvalidRequest(f"Invalid value for '{param}': {message}{more}.", param=param)
    return InvalidRequest(f"Invalid request: {message}{more}.")


def _dotted(loc: tuple[int | str, ...]) -> str:
    """('messages', 0, 'role') → 'messages[0].role'; union branch names are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part[:1].isupper() or part in {"str", "list[str]", "int", "list[int]"} or "[" in part:
            continue  # pydantic's name of a union member, not a field
        else:
            out += f".{part}" if out else part
    return out
