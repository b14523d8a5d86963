"""Ollama's API (`/api/*` and the `/` probe) over every model Hearth serves: requests are
translated to OpenAI ones and routed like any other; errors answer as `{"error": "message"}`."""

from __future__ import annotations

from fastapi import FastAPI

from hearth.api.errors import add_error_shape
from hearth.api.ollama import generate, models, pull
from hearth.api.ollama.protocol import error_body

PATH_PREFIX = "/api"


def install(app: FastAPI) -> None:
    """Add the Ollama endpoints and their error shape to the application."""
    for module in (generate, models, pull):
        app.include_router(module.router)
    add_error_shape(app, PATH_PREFIX, error_body)
    app.state.ollama_pulls = pull.Pulls()
