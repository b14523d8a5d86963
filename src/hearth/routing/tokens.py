"""Counting a conversation's input tokens without generating (Anthropic's count_tokens), and
the tokenizer endpoints (/tokenize, /detokenize) answered by a local model's engine.

For a local model whose engine can count (capability `token_counting`: llama-server renders the
conversation with the model's chat template at `/apply-template`, tools included, and tokenizes
it at `/tokenize`) the count is exact: it equals the `input_tokens` a request with the same
conversation reports. The model is loaded for it if it is not. For any other deployment it is an
estimate: the characters of the messages and tool definitions divided by four, rounded up.

The same capability answers /tokenize and /detokenize (llama-server's endpoints of those names);
no other deployment can, and says so with a 400."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from hearth.deployments.deployment import LocalDeployment, Route
from hearth.errors import InvalidRequest
from hearth.observability.request_id import REQUEST_ID_HEADER
from hearth.scheduler.scheduler import Scheduler
from hearth.upstream.client import UpstreamClient

CHARS_PER_TOKEN = 4


async def count_input_tokens(
    scheduler: Scheduler,
    upstream: UpstreamClient,
    route: Route,
    chat: dict[str, Any],
    request_id: str,
) -> int:
    """Input tokens of the OpenAI chat request `chat` (messages and tools) on `route`."""
    deployment = route.local
    if deployment is None or not deployment.capabilities.token_counting:
        return estimate_tokens(chat)
    loaded = await scheduler.make_room_and_load(deployment)
    base = await loaded.supervisor.endpoint()
    what = f"the engine for model '{deployment.name}'"
    headers = {REQUEST_ID_HEADER: request_id}
    template_body = {key: chat[key] for key in ("messages", "tools") if key in chat}
    rendered = await upstream.post(
        base + "/apply-template", json.dumps(template_body).encode(), what, headers
    )
    tokens = await upstream.post(
        base + "/tokenize",
        # As the engine tokenizes a prompt it is sent: special tokens added (BOS) and parsed.
        json.dumps({"content": rendered.get("prompt", ""), "add_special": True}).encode(),
        what,
        headers,
    )
    return len(tokens.get("tokens") or [])


def estimate_tokens(chat: dict[str, Any]) -> int:
    text = json.dumps(chat.get("messages", []), ensure_ascii=False)
    text += json.dumps(chat.get("tools", []), ensure_ascii=False)
    return math.ceil(len(text) / CHARS_PER_TOKEN)


async def tokenize_on_engine(
    scheduler: Scheduler,
    upstream: UpstreamClient,
    route: Route,
    fields: dict[str, Any],
    request_id: str,
) -> dict[str, Any]:
    """`fields` tokenized by the model's engine: {"tokens", "max_model_len"}. `fields` holds
    `content`, or `messages` (and `tools`, `add_generation_prompt`) rendered with the model's
    chat template first; `add_special` and `with_pieces` as llama-server reads them."""
    deployment = _tokenizing(route)
    base = await _engine_url(scheduler, deployment)
    what = f"the engine for model '{deployment.name}'"
    headers = {REQUEST_ID_HEADER: request_id}
    content = fields.get("content")
    if content is None:
        keys = ("messages", "tools", "add_generation_prompt")
        template_body = {key: fields[key] for key in keys if key in fields}
        rendered = await upstream.post(
            base + "/apply-template", json.dumps(template_body).encode(), what, headers
        )
        content = rendered.get("prompt", "")
    body = {
        "content": content,
        "add_special": bool(fields.get("add_special")),
        "with_pieces": bool(fields.get("with_pieces")),
    }
    tokens, meta = await asyncio.gather(
        upstream.post(base + "/tokenize", json.dumps(body).encode(), what, headers),
        _model_meta(upstream, base, what, headers),
    )
    return {"tokens": tokens.get("tokens") or [], "max_model_len": meta.get("n_ctx")}


async def detokenize_on_engine(
    scheduler: Scheduler,
    upstream: UpstreamClient,
    route: Route,
    tokens: list[int],
    request_id: str,
) -> str:
    """The text of token ids, by the model's engine. An id past the model's vocabulary is a
    400 naming it (llama-server would answer it with a 500)."""
    deployment = _tokenizing(route)
    base = await _engine_url(scheduler, deployment)
    what = f"the engine for model '{deployment.name}'"
    headers = {REQUEST_ID_HEADER: request_id}
    n_vocab = (await _model_meta(upstream, base, what, headers)).get("n_vocab")
    if isinstance(n_vocab, int):
        for index, token in enumerate(tokens):
            if not 0 <= token < n_vocab:
                raise InvalidRequest(
                    f"Invalid value for 'tokens[{index}]': {token} is not a token of the model "
                    f"'{route.name}' (its ids are 0 to {n_vocab - 1}).",
                    param=f"tokens[{index}]",
                )
    body = json.dumps({"tokens": tokens}).encode()
    answer = await upstream.post(base + "/detokenize", body, what, headers)
    return str(answer.get("content") or "")


def _tokenizing(route: Route) -> LocalDeployment:
    """The route's local model, if its engine tokenizes; a 400 saying why not otherwise."""
    deployment = route.local
    if deployment is None:
        raise InvalidRequest(
            f"The model '{route.name}' cannot tokenize here: it is served by remote deployments, "
            "and only a local model's engine tokenizes for Hearth.",
            param="model",
        )
    if not deployment.capabilities.token_counting:
        raise InvalidRequest(
            f"The model '{route.name}' cannot tokenize: its engine has no tokenizer endpoint "
            "(llama.cpp models have one).",
            param="model",
        )
    return deployment


async def _engine_url(scheduler: Scheduler, deployment: LocalDeployment) -> str:
    """The base URL of the model's engine, loading it first if it is not loaded."""
    loaded = await scheduler.make_room_and_load(deployment)
    return await loaded.supervisor.endpoint()


async def _model_meta(
    upstream: UpstreamClient, base: str, what: str, headers: dict[str, str]
) -> dict[str, Any]:
    """llama-server's facts about its model (n_vocab, n_ctx per slot), from its model list."""
    listing = await upstream.get(base + "/v1/models", what, headers)
    models = listing.get("data")
    if isinstance(models, list) and models and isinstance(models[0], dict):
        meta = models[0].get("meta")
        if isinstance(meta, dict):
            return meta
    return {}
