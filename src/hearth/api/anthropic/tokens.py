"""Counting a conversation's input tokens for POST /v1/messages/count_tokens.

For a model whose engine can count tokens (`token_counting`: llama.cpp) the count is exact: the
engine renders the conversation with the model's chat template (`/apply-template`, tools
included) and tokenizes the result (`/tokenize`), so it equals the `input_tokens` a request with
the same conversation reports. The model is loaded for it if it is not. For any other upstream it
is an estimate: the characters of the rendered messages and tool definitions divided by four,
rounded up.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from hearth.api.services import services_of
from hearth.observability.request_id import REQUEST_ID_HEADER

CHARS_PER_TOKEN = 4


async def count_input_tokens(request: Request, model: str, chat: dict[str, Any]) -> int:
    """Input tokens of the OpenAI chat request `chat` (messages and tools) for `model`."""
    services = services_of(request)
    route = services.catalogue.resolve(model)
    request.state.model = route.name
    deployment = route.local
    if deployment is None or not deployment.capabilities.token_counting:
        return estimate_tokens(chat)
    loaded = await services.scheduler.make_room_and_load(deployment)
    base = await loaded.supervisor.endpoint()
    what = f"the engine for model '{deployment.name}'"
    headers = {REQUEST_ID_HEADER: request.state.request_id}
    template_body = {key: chat[key] for key in ("messages", "tools") if key in chat}
    rendered = await services.upstream.post(
        base + "/apply-template", json.dumps(template_body).encode(), what, headers
    )
    tokens = await services.upstream.post(
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
