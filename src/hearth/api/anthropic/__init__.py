"""Anthropic's Messages API (`/v1/messages`) over every model Hearth serves: requests are
translated to OpenAI chat requests and routed like any other; errors answer in Anthropic's shape.
Keys may come in `x-api-key` as well as `Authorization`."""

from __future__ import annotations

from fastapi import FastAPI

from hearth.api.anthropic import messages
from hearth.api.anthropic.protocol import error_body
from hearth.api.errors import add_error_shape

PATH_PREFIX = "/v1/messages"


def install(app: FastAPI) -> None:
    """Add the Messages API endpoints and their error shape to the application."""
    app.include_router(messages.router)
    add_error_shape(app, PATH_PREFIX, error_body)
