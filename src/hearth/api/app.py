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
from hearth.api import anthropic, ollama, probes, prometheus, responses, ui
from hearth.api.admin import deployments as admin_deployments
from hearth.api.admin import keys as admin_keys
from hearth.api.admin import models as admin_models
from hearth.api.admin import settings as admin_settings
from hearth.api.admin import stats as admin_stats
from hearth.api.admin import usage as admin_usage
from hearth.api.admin.latency_window import LatencyWindow
from hearth.api.auth_guard import AuthGuard
from hearth.api.body_limit import BodySizeLimit
from hearth.api.browser_guard import BrowserGuard, BrowserPolicy
from hearth.api.errors import install_error_handlers
from hearth.api.hot_routes import hot_routes
from hearth.api.observe import RequestObserver
from hearth.api.openai import audio, chat, completions, embeddings, models, rerank, tokenize
from hearth.api.services import Services, start_services
from hearth.config import Settings
from hearth.errors import ConfigError
from hearth.observability.metrics import HearthMetrics
from hearth.observability.tracing import start_tracing

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
        services = await start_services(settings, metrics, tracing)
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
            tracing.shutdown()

    app = FastAPI(
        title="Hearth",
        version=__version__,
        summary="A self-hosted LLM server and gateway with an OpenAI-compatible API.",
        lifespan=lifespan,
        redoc_url=None,
        # Hearth makes its own spans and metrics (hearth.observability); FastAPI's native
        # OpenTelemetry would otherwise look up the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    metrics = HearthMetrics()
    tracing = start_tracing(settings.tracing)
    app.state.tracing = tracing
    app.state.metrics = metrics
    app.state.latency_window = LatencyWindow()  # the dashboard's recent percentiles
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_request_bytes, paths=audio.body_limits(settings)
    )
    app.add_middleware(AuthGuard)  # keys; inside the observer, so refusals are logged too
    # Host and Origin (DNS rebinding, CSRF): before keys and bodies, inside the observer.
    app.add_middleware(BrowserGuard, policy=BrowserPolicy.from_settings(settings))
    # Outermost: sees every answer.
    app.add_middleware(RequestObserver, metrics=metrics, tracing=tracing)
    install_error_handlers(app)
    app.include_router(probes.router)
    app.include_router(prometheus.router)
    for module in (chat, completions, embeddings, rerank, tokenize, models, audio):
        app.include_router(module.router, tags=["openai"])
    app.include_router(admin_models.router)
    app.include_router(admin_settings.router)
    app.include_router(admin_deployments.router)
    app.include_router(admin_stats.router)
    app.include_router(admin_keys.router)
    app.include_router(admin_usage.router)
    app.include_router(ui.router)
    ollama.install(app)
    anthropic.install(app)
    responses.install(app)
    app.router.routes[:0] = hot_routes()  # matched first: see hearth.api.hot_routes
    return app
