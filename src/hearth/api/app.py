"""`create_app(settings)`: the ASGI application, with its services started in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hearth import __version__
from hearth.api import health
from hearth.api import metrics as metrics_endpoint
from hearth.api.admin import models as admin_models
from hearth.api.admin import settings as admin_settings
from hearth.api.errors import install_error_handlers
from hearth.api.limits import BodySizeLimit
from hearth.api.observe import RequestObserver
from hearth.api.openai import chat, completions, models
from hearth.api.services import Services, start_services
from hearth.config import Settings
from hearth.errors import ConfigError
from hearth.observability.metrics import HearthMetrics

log = logging.getLogger(__name__)

SettingsLoader = Callable[[], Settings]


def _on_sighup(
    services: Services, reload_settings: SettingsLoader, background: set[asyncio.Task[None]]
) -> None:
    async def reload() -> None:
        try:
            await services.reload(reload_settings())
        except ConfigError as exc:
            log.error("settings not reloaded, the old ones stay in force: %s", exc)

    task = asyncio.create_task(reload())
    background.add(task)
    task.add_done_callback(background.discard)


def create_app(settings: Settings, reload_settings: SettingsLoader | None = None) -> FastAPI:
    """The application. `reload_settings` reads the settings again from where they came from;
    given it, SIGHUP and POST /admin/reload apply changed model settings while serving."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await start_services(settings, metrics)
        app.state.services = services
        metrics.watch(services.collect_metrics)
        app.state.reload_settings = reload_settings
        background: set[asyncio.Task[None]] = set()
        if reload_settings is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform
                asyncio.get_running_loop().add_signal_handler(
                    signal.SIGHUP, _on_sighup, services, reload_settings, background
                )
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
    metrics = HearthMetrics()
    app.state.metrics = metrics
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestObserver, metrics=metrics)  # outermost: sees every answer
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics_endpoint.router)
    for module in (chat, completions, models):
        app.include_router(module.router, tags=["openai"])
    app.include_router(admin_models.router)
    app.include_router(admin_settings.router)
    return app
