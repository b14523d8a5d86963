"""`create_app(settings)`: the ASGI application, with its services started in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hearth import __version__
from hearth.api import health
from hearth.api.admin import models as admin_models
from hearth.api.errors import install_error_handlers
from hearth.api.limits import BodySizeLimit
from hearth.api.openai import chat, completions, models
from hearth.api.services import start_services
from hearth.config import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await start_services(settings)
        app.state.services = services
        try:
            yield
        finally:
            log.info("stopping engines")
            await services.aclose()

    app = FastAPI(
        title="Hearth",
        version=__version__,
        summary="A self-hosted LLM server and gateway with an OpenAI-compatible API.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    install_error_handlers(app)
    app.include_router(health.router)
    for module in (chat, completions, models):
        app.include_router(module.router, tags=["openai"])
    app.include_router(admin_models.router)
    return app
