"""Counting a conversation's input tokens without generating (Anthropic's count_tokens).

For a local model whose engine can count (capability `token_counting`: llama-server renders the
conversation with the model's chat template at `/apply-template`, tools included, and tokenizes
it at `/tokenize`) the count is exact: it equals the `input_tokens` a request with the same
conversation reports. The model is loaded for it if it is not. For any other deployment it is an
estimate: the characters of the messages and tool definitions divided by four, rounded up."""

from __future__ import annotations

import json
import math
from typing import Any

from hearth.deployments.deployment import Route
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
