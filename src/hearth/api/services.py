"""The objects that live as long as the server: settings, catalogue, engines, upstream client."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from starlette.requests import Request

from hearth.config import Settings
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher, bundled_template
from hearth.engines.llama_cpp.locate import locate_llama_server
from hearth.engines.supervisor import EngineSupervisor, SupervisorPolicy
from hearth.models.bundled import BUNDLED_MODEL_NAME, BUNDLED_TEMPLATE, ensure_bundled_model
from hearth.routing.catalogue import Catalogue, LocalDeployment
from hearth.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    catalogue: Catalogue
    upstream: UpstreamClient

    async def aclose(self) -> None:
        await asyncio.gather(*(d.supervisor.stop() for d in self.catalogue.deployments()))
        await self.upstream.aclose()

    def kill_engines(self) -> None:
        for deployment in self.catalogue.deployments():
            deployment.supervisor.kill_now()


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


async def start_services(settings: Settings) -> Services:
    """Prepare the default model and start its engine; returns before the engine is ready."""
    binary = locate_llama_server(settings.llama_server, settings.tools_dir)
    model_path = await asyncio.to_thread(ensure_bundled_model, settings.models_dir)
    launcher = LlamaServerLauncher(
        binary=binary.path,
        model_path=model_path,
        alias=BUNDLED_MODEL_NAME,
        settings=settings.engine,
        chat_template_file=bundled_template(BUNDLED_TEMPLATE),
    )
    supervisor = EngineSupervisor(
        BUNDLED_MODEL_NAME,
        launcher,
        log_path=settings.logs_dir / f"{BUNDLED_MODEL_NAME}.log",
        policy=supervisor_policy(settings),
    )
    catalogue = Catalogue()
    catalogue.add(LocalDeployment(BUNDLED_MODEL_NAME, supervisor, launcher.capabilities))
    services = Services(settings, catalogue, UpstreamClient(settings.upstream_timeout))
    supervisor.start()
    log.info("engine log for %s: %s", BUNDLED_MODEL_NAME, supervisor.log_path)
    return services
