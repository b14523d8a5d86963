"""Remote deployments and multi-deployment routes, from the settings."""

from __future__ import annotations

import logging

import httpx

from hearth.config import DeploymentSettings, Settings
from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import RemoteDeployment, Route, Target
from hearth.engines.base import Capabilities
from hearth.errors import ConfigError
from hearth.secrets import resolve_secret

log = logging.getLogger(__name__)

MAX_MODEL_ID_LENGTH = 256  # of an imported model id (`import_models`)


def remote_deployment(name: str, settings: DeploymentSettings, model: str) -> RemoteDeployment:
    return RemoteDeployment(
        name=name,
        url=settings.url.rstrip("/"),
        model=model,
        capabilities=Capabilities.named(settings.capabilities),
        api_key=(
            None
            if settings.api_key is None
            else resolve_secret(settings.api_key, f"deployments.{name}.api_key")
        ),
        headers=dict(settings.headers),
        timeouts=settings.timeouts,
        max_concurrency=settings.max_concurrency,
        price=settings.price,
        aliases=list(settings.aliases),
        health_check=settings.health_check,
    )


def add_remote_deployments(catalogue: Catalogue, settings: Settings) -> None:
    for name, deployment_settings in settings.deployments.items():
        deployment = remote_deployment(name, deployment_settings, deployment_settings.model or name)
        _add(catalogue, deployment, f"deployments.{name}")
        if deployment_settings.import_models:
            for model in list_remote_models(deployment):
                imported = remote_deployment(f"{name}/{model}", deployment_settings, model)
                imported.aliases = []
                _add(catalogue, imported, f"deployments.{name}.import_models")


def list_remote_models(deployment: RemoteDeployment) -> list[str]:
    """The model ids an upstream's GET /models lists; none (with a warning) when it cannot be
    reached, so one unreachable upstream does not keep Hearth from starting."""
    try:
        response = httpx.get(
            deployment.url + "/models",
            headers=deployment.request_headers(),
            timeout=deployment.timeouts.connect + deployment.timeouts.first_token,
            trust_env=False,
        )
        response.raise_for_status()
        data = response.json()["data"]
        ids = {str(item["id"]) for item in data if isinstance(item, dict) and "id" in item}
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot import the models of %s: %s", deployment.describe(), type(exc).__name__)
        return []
    usable = sorted(model for model in ids if _usable_model_id(model))
    for model in sorted(ids.difference(usable)):
        shown = repr(model[:80]) + ("…" if len(model) > 80 else "")
        log.warning(
            "not importing the model %s of %s: an id must be at most %d printable characters",
            shown,
            deployment.describe(),
            MAX_MODEL_ID_LENGTH,
        )
    return usable


def _usable_model_id(model: str) -> bool:
    """Whether an upstream's model id can name a deployment: printable (a newline would end a
    response header or forge a log line), non-empty and of bounded length."""
    return 0 < len(model) <= MAX_MODEL_ID_LENGTH and model.isprintable()


def add_routes(catalogue: Catalogue, settings: Settings) -> None:
    for name, route_settings in settings.routes.items():
        targets = []
        for target in route_settings.targets():
            deployment = catalogue.deployment(target.deployment)
            if deployment is None:
                known = ", ".join(d.name for d in catalogue.all_deployments())
                raise ConfigError(
                    f"routes.{name}: '{target.deployment}' is neither a local model nor a "
                    f"deployment; known: {known}"
                )
            targets.append(Target(deployment, target.weight))
        if route_settings.strategy == "weighted" and not any(t.weight > 0 for t in targets):
            raise ConfigError(f"routes.{name}: a weighted route needs a weight above 0")
        route = Route(name, targets, route_settings.strategy, list(route_settings.aliases))
        route.cascade = route_settings.cascade
        try:
            catalogue.add_route(route)
        except ValueError as exc:
            raise ConfigError(f"routes.{name}: {exc}") from None


def _add(catalogue: Catalogue, deployment: RemoteDeployment, where: str) -> None:
    try:
        catalogue.add(deployment)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
