"""POST /tokenize and /detokenize (also under /v1/), shaped as both llama.cpp's and vLLM's: text
(`content` or `prompt`) or a conversation (`messages`) to token ids, and ids back to text, by the
model's own engine. Admitted like a request to the model: a key tokenizes only on its models."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, Strict, model_validator

from hearth.api.gateway import pipeline_request
from hearth.api.scope import resolve_visible
from hearth.api.services import services_of
from hearth.wire.base import ModelRequest, parse_request
from hearth.wire.chat import MAX_MESSAGES, MAX_TOOLS, ChatMessage, Tool

MAX_TEXT_CHARS = 1_000_000  # a quarter of a million tokens or so; the body limit caps it too
MAX_TOKENS = 1_000_000
TOKEN_ID_LIMIT = 2**31  # llama.cpp's token ids are int32; the engine checks its vocabulary

TokenId = Annotated[int, Strict(), Field(ge=0, lt=TOKEN_ID_LIMIT)]
Flag = Annotated[bool, Strict()]  # "yes" or 1 is a mistake to report, not a truth to guess


class TokenizeRequest(ModelRequest):
    """llama.cpp's fields (`content`, `add_special`, `with_pieces`) and vLLM's (`prompt` or
    `messages`, `add_special_tokens`, `add_generation_prompt`)."""

    content: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    prompt: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    add_generation_prompt: Flag | None = None
    add_special: Flag | None = None
    add_special_tokens: Flag | None = None
    with_pieces: Flag = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        given = [n for n in ("content", "prompt", "messages") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("send exactly one of 'content', 'prompt' or 'messages'")
        if self.messages is None and (self.tools or self.add_generation_prompt is not None):
            raise ValueError("'tools' and 'add_generation_prompt' go with 'messages'")
        both = (self.add_special, self.add_special_tokens)
        if None not in both and both[0] != both[1]:
            raise ValueError("'add_special' and 'add_special_tokens' disagree")
        return self

    def engine_fields(self) -> dict[str, Any]:
        """What the engine is asked, in llama-server's terms. Special tokens (BOS) are added as
        each origin does by default: not for llama.cpp's `content`, but for vLLM's `prompt`, and
        for `messages`, which then count exactly as a chat request's prompt tokens."""
        add_special = self.add_special if self.add_special is not None else self.add_special_tokens
        fields: dict[str, Any] = {"with_pieces": self.with_pieces}
        if self.messages is not None:
            fields.update(self.model_dump(include={"messages", "tools"}, exclude_none=True))
            if self.add_generation_prompt is not None:
                fields["add_generation_prompt"] = self.add_generation_prompt
            fields["add_special"] = True if add_special is None else add_special
        elif self.content is not None:
            fields["content"] = self.content
            fields["add_special"] = bool(add_special)
        else:
            fields["content"] = self.prompt
            fields["add_special"] = True if add_special is None else add_special
        return fields


class DetokenizeRequest(ModelRequest):
    tokens: list[TokenId] = Field(max_length=MAX_TOKENS)


router = APIRouter()


async def tokenize(request: Request) -> dict[str, Any]:
    payload = parse_request(TokenizeRequest, await request.body())
    resolve_visible(request, services_of(request).catalogue, payload.model)
    call = pipeline_request(request, payload, request.url.path, "tokenize")
    call.fields = payload.engine_fields()
    answer = await services_of(request).pipeline.tokenize(call)
    tokens = answer["tokens"]
    return {"tokens": tokens, "count": len(tokens), "max_model_len": answer["max_model_len"]}


async def detokenize(request: Request) -> dict[str, str]:
    payload = parse_request(DetokenizeRequest, await request.body())
    resolve_visible(request, services_of(request).catalogue, payload.model)
    call = pipeline_request(request, payload, request.url.path, "detokenize")
    text = await services_of(request).pipeline.detokenize(call)
    return {"content": text, "prompt": text}  # llama.cpp's name, and vLLM's


for _prefix in ("", "/v1"):
    router.add_api_route(
        f"{_prefix}/tokenize",
        tokenize,
        methods=["POST"],
        summary="Text or a conversation to the model's token ids",
        include_in_schema=not _prefix,
    )
    router.add_api_route(
        f"{_prefix}/detokenize",
        detokenize,
        methods=["POST"],
        summary="Token ids to the model's text",
        include_in_schema=not _prefix,
    )
