"""Wire models shared by the OpenAI endpoints, and request parsing with errors that name the field.

Request models accept unknown fields (clients send vendor extras such as `top_k` or `min_p`, which
llama.cpp understands) and forward them; known fields are validated before an engine sees them,
since llama-server accepts several invalid values silently or answers them with a 500.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hearth.errors import InvalidRequest

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound="OpenAIBaseModel")


class OpenAIBaseModel(BaseModel):
    # No NaN or Infinity anywhere: serialised, they are not JSON, and an engine answers 500.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_extra_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            for name, value in self.model_extra.items():
                check_finite(value, name)
            log.debug(
                "%s: passing through extra fields %s", type(self).__name__, sorted(self.model_extra)
            )
        return self


def check_finite(value: Any, where: str) -> Any:
    """`value` unchanged if every number in it is finite; else a ValueError naming where."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"'{where}' must be a finite number, not {value}")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_finite(item, f"{where}[{index}]")
    return value


FreeForm = Annotated[dict[str, Any], AfterValidator(lambda v: check_finite(v, "object"))]


class StreamOptions(OpenAIBaseModel):
    include_usage: bool = False


class ModelRequest(OpenAIBaseModel):
    """Any request addressed to a model: what the router needs from it."""

    model: str = Field(min_length=1)

    def inputs(self) -> frozenset[str]:
        """What beyond text the model must accept for this request (e.g. "vision")."""
        return frozenset()


# LoRA adapters (docs/models.md, "Adapters (LoRA)"): a request's `adapter` is a name, or an
# object with the name and a scale (1: as trained, 0: off).
MAX_ADAPTER_SCALE = 4.0
AdapterName = Annotated[str, Field(min_length=1, max_length=64)]


class AdapterSelection(BaseModel):
    """`adapter` as an object: which of the model's LoRA adapters, at which strength."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: AdapterName
    scale: float = Field(1.0, ge=0, le=MAX_ADAPTER_SCALE)


class SamplingParams(ModelRequest):
    """Fields shared by chat and legacy completions: OpenAI's, and the extensions llama.cpp
    (and vLLM) read, each checked for type and range, since an engine answers a wrong one
    with a 500 that says nothing to the client."""

    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    # More than routing.max_choices is refused by the router (a local engine answers n > 1 as n
    # requests, routing/fan_out.py; llama-server's own n miscounts usage).
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None, max_length=1024
    )
    user: str | None = Field(None, max_length=256)
    # Extensions (llama.cpp's names; vLLM reads the common ones).
    top_k: int | None = Field(None, ge=-1, le=1_000_000)
    min_p: float | None = Field(None, ge=0, le=1)
    typical_p: float | None = Field(None, ge=0, le=1)
    top_n_sigma: float | None = Field(None, ge=-1, le=100)
    repeat_penalty: float | None = Field(None, ge=0, le=10)
    repetition_penalty: float | None = Field(None, ge=0, le=10)
    repeat_last_n: int | None = Field(None, ge=-1, le=1_000_000)
    mirostat: Literal[0, 1, 2] | None = None
    mirostat_tau: float | None = Field(None, ge=0, le=100)
    mirostat_eta: float | None = Field(None, ge=0, le=10)
    dynatemp_range: float | None = Field(None, ge=0, le=2)
    dynatemp_exponent: float | None = Field(None, ge=0, le=10)
    xtc_probability: float | None = Field(None, ge=0, le=1)
    xtc_threshold: float | None = Field(None, ge=0, le=1)
    dry_multiplier: float | None = Field(None, ge=0, le=10)
    dry_base: float | None = Field(None, ge=1, le=10)
    dry_allowed_length: int | None = Field(None, ge=0, le=1_000_000)
    dry_penalty_last_n: int | None = Field(None, ge=-1, le=1_000_000)
    n_probs: int | None = Field(None, ge=0, le=20)
    min_keep: int | None = Field(None, ge=0, le=1000)
    n_keep: int | None = Field(None, ge=-1, le=1_000_000)
    ignore_eos: bool | None = None
    cache_prompt: bool | None = None
    samplers: list[str] | str | None = Field(None, max_length=32)
    grammar: str | None = None
    json_schema: FreeForm | None = None
    reasoning_format: Literal["none", "auto", "deepseek", "deepseek-legacy"] | None = None
    chat_template_kwargs: FreeForm | None = None
    adapter: AdapterName | AdapterSelection | None = None  # a LoRA adapter of the model

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
