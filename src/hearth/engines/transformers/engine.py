"""The transformers engine as the registry sees it: Hearth's own worker serving a Hugging Face
model folder, on any machine; the fallback for folders when no GPU engine claims them."""

from __future__ import annotations

from pathlib import Path

from hearth.config import ModelSettings, Settings
from hearth.engines.gpu import Accelerators
from hearth.engines.spec import FALLBACK, BuiltEngine, EngineContext, EngineSpec, ModelEntry
from hearth.engines.status import EngineStatus
from hearth.engines.transformers.folder import inspect_folder, is_model_folder
from hearth.engines.transformers.launcher import (
    INSTALL_HINT,
    TransformersLauncher,
    installed_versions,
    require_transformers,
)
from hearth.errors import ConfigError

FRAMEWORK_BYTES = 300 * 1024 * 1024  # torch and the worker, besides the weights


def claim(model: ModelSettings, context: EngineContext) -> int | None:
    return FALLBACK if is_model_folder(Path(model.model).expanduser()) else None


def build(entry: ModelEntry, context: EngineContext) -> BuiltEngine:
    model = entry.settings
    path = Path(model.model).expanduser()
    if not is_model_folder(path):
        raise ConfigError(
            f"models.{entry.name}.model: the transformers engine serves a Hugging Face model "
            f"folder (with a config.json); {model.model!r} is not one"
        )
    require_transformers()
    info = inspect_folder(path.resolve())
    task = model.task or info.task
    launcher = TransformersLauncher(
        model_dir=path.resolve(),
        alias=entry.name,
        task=task,
        capabilities=info.capabilities(task),
        device=model.device,
        dtype=model.dtype,
        threads=model.threads or context.settings.engine.threads,
    )
    # Weights in memory plus the framework's own footprint.
    memory = int(info.size_bytes * 1.2) + FRAMEWORK_BYTES
    return BuiltEngine(launcher, memory, entry.slots(ENGINE.default_slots))


def status(name: str, settings: Settings, accelerators: Accelerators) -> EngineStatus:
    versions = installed_versions()
    missing = [package for package, version in versions.items() if version is None]
    if missing:
        return EngineStatus(name, False, None, f"{', '.join(missing)} missing; {INSTALL_HINT}")
    shown = ", ".join(f"{package} {version}" for package, version in versions.items())
    return EngineStatus(name, True, versions["transformers"], shown)


ENGINE = EngineSpec(
    names=("transformers",), build=build, default_slots=4, claim=claim, status=status
)
