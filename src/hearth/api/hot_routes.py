"""The generation endpoints as plain Starlette routes, matched before FastAPI's.

Every generated token goes through POST /v1/chat/completions, /v1/completions or /v1/responses.
As Starlette routes they skip FastAPI's per-request work (nested router matching, dependency
solving), which was about a sixth of the gateway's CPU per request (see docs/benchmarks.md).
Their FastAPI routes stay registered behind these, so the OpenAPI schema still lists them.
"""

from __future__ import annotations

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from hearth.api.openai import chat, completions
from hearth.api.responses import routes as responses


class LabelledRoute(Route):
    """Leaves itself in scope["route"] as FastAPI's routes do: metrics and traces label a
    request by its route's path template."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)


def hot_routes() -> list[Route]:
    return [
        LabelledRoute("/v1/chat/completions", chat.create_chat_completion, methods=["POST"]),
        LabelledRoute("/v1/completions", completions.create_completion, methods=["POST"]),
        LabelledRoute("/v1/responses", responses.create_response, methods=["POST"]),
    ]
