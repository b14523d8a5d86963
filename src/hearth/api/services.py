"""The objects that live as long as the server: settings, catalogue, scheduler, upstream client."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from hearth.config import ModelSettings, Settings
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher, bundled_template
from hearth.engines.llama_cpp.locate import locate_llama_server
from hearth.engines.supervisor import SupervisorPolicy
from hearth.errors import ConfigError, ModelNotFound, SetupError
from hearth.models.bundled import BUNDLED_MODEL_NAME, BUNDLED_TEMPLATE, ensure_bundled_model
from hearth.routing.catalogue import Catalogue, LocalDeployment
from hearth.scheduler.scheduler import Scheduler
from hearth.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    catalogue: Catalogue
    scheduler: Scheduler
    upstream: UpstreamClient

    async def aclose(self) -> None:
        await self.scheduler.aclose()
        await self.upstream.aclose()


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def supervisor_policy(settings: Settings) -> SupervisorPolicy:
    engine = settings.engine
    return SupervisorPolicy(
        startup_timeout=engine.startup_timeout,
        shutdown_grace=engine.shutdown_grace,
        backoff_max=engine.restart_backoff_max,
    )


def build_catalogue(settings: Settings, binary: Path, bundled_model: Path) -> Catalogue:
    """The bundled model plus every model in the `models` section of the settings."""
    models = dict(settings.models)
    models.setdefault(BUNDLED_MODEL_NAME, ModelSettings(model=BUNDLED_MODEL_NAME))
    catalogue = Catalogue()
    for name, model in models.items():
        path, template = _model_file(name, model, bundled_model)
        launcher = LlamaServerLauncher(
            binary=binary,
            model_path=path,
            alias=name,
            settings=model.engine(settings.engine),
            chat_template_file=template,
        )
        keep_alive = settings.keep_alive if model.keep_alive is None else model.keep_alive
        try:
            catalogue.add(LocalDeployment(name, launcher, keep_alive, list(model.aliases)))
        except ValueError as exc:
            raise ConfigError(f"models.{name}: {exc}") from None
    for name in settings.preload:
        try:
            catalogue.resolve(name)
        except ModelNotFound:
            known = ", ".join(catalogue.names())
            raise ConfigError(f"preload: '{name}' is not a model; known: {known}") from None
    return catalogue


def _model_file(name: str, model: ModelSettings, bundled_model: Path) -> tuple[Path, Path | None]:
    """The GGUF a model entry refers to, and the chat template to give the engine (if any)."""
    if model.model == BUNDLED_MODEL_NAME:
        # The bundled GGUF has no chat template of its own.
        path, template = bundled_model, bundled_template(BUNDLED_TEMPLATE)
    else:
        path, template = Path(model.model).expanduser(), None
        if path.suffix != ".gguf" or not path.is_file():
            raise ConfigError(
                f"models.{name}.model: {model.model!r} is neither '{BUNDLED_MODEL_NAME}' nor an "
                "existing .gguf file"
            )
    if model.chat_template is not None:
        candidate = Path(model.chat_template).expanduser()
        try:
            template = candidate if candidate.is_file() else bundled_template(model.chat_template)
        except SetupError:
            raise ConfigError(
                f"models.{name}.chat_template: {model.chat_template!r} is neither a file nor a "
                f"template shipped with Hearth ({BUNDLED_TEMPLATE})"
            ) from None
    return path, template


async def start_services(settings: Settings) -> Services:
    """Build the catalogue and start loading the preloaded models; returns before they are ready."""
    binary = locate_llama_server(settings.llama_server, settings.tools_dir)
    bundled_model = await asyncio.to_thread(ensure_bundled_model, settings.models_dir)
    catalogue = build_catalogue(settings, binary.path, bundled_model)
    scheduler = Scheduler(supervisor_policy(settings), settings.logs_dir)
    scheduler.start()
    for name in settings.preload:
        deployment = catalogue.resolve(name)
        # Preloaded models stay loaded unless their own keep_alive says otherwise: /ready
        # promises they are there.
        own = settings.models.get(deployment.name)
        scheduler.load(deployment, keep_alive=None if own and own.keep_alive is not None else -1)
    log.info("engine logs in %s", settings.logs_dir)
    return Services(settings, catalogue, scheduler, UpstreamClient(settings.upstream_timeout))
