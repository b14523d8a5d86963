"""Building the catalogue from the settings and the model store: local models, remote
deployments and the routes over them."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from pydantic import ValidationError

from hearth.config import BUNDLED_MODEL_NAME, ModelSettings, Settings
from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import LocalDeployment, Route, Target
from hearth.deployments.remote import add_remote_deployments, add_routes
from hearth.deployments.replicas import build_replicas
from hearth.engines.base import Launcher
from hearth.engines.gpu import detect_accelerators
from hearth.engines.registry import EngineRegistry, default_registry
from hearth.engines.spec import EngineContext
from hearth.errors import ConfigError, ModelNotFound
from hearth.models.presets import PresetStore
from hearth.models.store import ModelStore
from hearth.models.versions import canonical_name, revision_names
from hearth.wire.base import SamplingParams

log = logging.getLogger(__name__)


def build_catalogue(
    settings: Settings,
    binary: Path | None,
    bundled_model: Path,
    engines: EngineRegistry | None = None,
) -> Catalogue:
    """Every servable model: the bundled one, each model in the store (the bundled embeddings
    model among them, once prepared) under its own name with the default settings, and the
    `models` section of the settings (which wins); then the remote deployments and the routes.
    Each entry's engine (`engines`, by default the built-in ones and those installed packages
    register) builds its launcher. Without llama-server (`binary` None: a gateway) the llama.cpp
    models are still listed, but marked unavailable."""
    store = ModelStore(settings.models_dir)
    stored_models = store.list()
    models = {
        stored.name: ModelSettings(model=stored.name)
        for stored in stored_models
        if stored.available and stored.name != BUNDLED_MODEL_NAME
    }
    models[BUNDLED_MODEL_NAME] = ModelSettings(model=BUNDLED_MODEL_NAME)
    models.update({canonical_name(k, store): v for k, v in settings.models.items()})
    commits, current = revision_names(stored_models)  # NAME@abc1234: see models/versions.py
    for name, alias in current.items():
        if name in models and models[name].model == name and alias not in models:
            models[name] = models[name].model_copy(
                update={"aliases": [*models[name].aliases, alias]}
            )
    catalogue = Catalogue(settings.routing.breaker)
    catalogue.add_revisions(commits)
    registry = engines or default_registry()
    context = EngineContext(settings, detect_accelerators(), store, bundled_model, binary)
    for name, model in models.items():
        built = registry.build(name, model, context)
        try:
            SamplingParams.model_validate({"model": name, **model.defaults})
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise ConfigError(f"models.{name}.defaults.{where}: {problem['msg']}") from None
        if model.adapters and not built.adapters:
            raise ConfigError(
                f"models.{name}.adapters: only llama.cpp models load LoRA adapters this way "
                f"(this one runs on {built.launcher.kind}; vLLM takes them as vllm.lora_modules)"
            )
        keep_alive = settings.keep_alive if model.keep_alive is None else model.keep_alive
        try:
            catalogue.add(
                LocalDeployment(
                    name,
                    built.launcher,
                    keep_alive,
                    list(model.aliases),
                    memory_bytes=built.memory_bytes,
                    slots=built.slots,
                    defaults=dict(model.defaults),
                    max_output_tokens=model.max_output_tokens or settings.max_output_tokens,
                    price=model.price,
                    unavailable=built.unavailable,
                    adapters=built.adapters,
                    replicas=build_replicas(
                        model,
                        settings,
                        keep_alive,
                        context.accelerators,
                        functools.partial(_launcher, registry, name, context),
                    ),
                )
            )
        except ValueError as exc:
            raise ConfigError(f"models.{name}: {exc}") from None
    add_remote_deployments(catalogue, settings)
    add_routes(catalogue, settings)
    add_adapter_routes(catalogue)
    add_presets(catalogue, PresetStore(settings.models_dir))
    for name in settings.preload:
        try:
            catalogue.local(name)
        except ModelNotFound:
            known = ", ".join(d.name for d in catalogue.deployments())
            raise ConfigError(f"preload: '{name}' is not a local model; known: {known}") from None
    return catalogue


def _launcher(
    registry: EngineRegistry, name: str, context: EngineContext, model: ModelSettings
) -> Launcher:
    """The launcher of an entry built with other settings (a replica's threads)."""
    return registry.build(name, model, context).launcher


def add_adapter_routes(catalogue: Catalogue) -> None:
    """`MODEL+ADAPTER` for each adapter of a local model: a route over the model's own deployment
    (one engine serves the model and all its adapters). A `+` is in no stored model's name."""
    for deployment in catalogue.deployments():
        for adapter in deployment.adapters:
            route = Route(f"{deployment.name}+{adapter}", [Target(deployment)], adapter=adapter)
            try:
                catalogue.add_route(route)
            except ValueError:
                log.warning("adapter route '%s' skipped: the settings use that name", route.name)


def add_presets(catalogue: Catalogue, presets: PresetStore) -> None:
    """Each preset as a route over its base's deployments (so it shares the base's engine).
    One whose name the settings took, or whose base is gone, is skipped with a warning."""
    for preset in presets.list():
        try:
            base = catalogue.resolve(preset.base)
        except ModelNotFound:
            log.warning("preset '%s' skipped: its base '%s' is gone", preset.name, preset.base)
            continue
        adapter = preset.adapter or base.adapter
        route = Route(
            preset.name, list(base.targets), base.strategy, preset=preset, adapter=adapter
        )
        try:
            catalogue.add_route(route)
        except ValueError:
            log.warning("preset '%s' skipped: the settings use that name", preset.name)
