"""OpenAI's Responses API (`/v1/responses`) over every model Hearth serves: requests are
translated to chat requests and routed down the one pipeline; answers are stored (unless
`store` is false) for `previous_response_id` and retrieval by the key that created them."""

from __future__ import annotations

from fastapi import FastAPI

from hearth.api.responses import routes


def install(app: FastAPI) -> None:
    """Add the Responses API endpoints to the application (errors keep OpenAI's shape)."""
    app.include_router(routes.router)
