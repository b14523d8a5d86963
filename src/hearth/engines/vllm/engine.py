"""The vLLM engine as the registry sees it: `vllm serve` for a model folder or a hub repository
id, on an NVIDIA GPU (or several nodes' GPUs through a Ray cluster); the preferred engine for
folders on such a machine when vLLM is installed."""

from __future__ import annotations

import logging
from pathlib import Path

from hearth.config import ModelSettings, Settings
from hearth.engines.base import Capabilities
from hearth.engines.gpu import Accelerators
from hearth.engines.spec import HARDWARE, BuiltEngine, EngineContext, EngineSpec, ModelEntry
from hearth.engines.status import EngineStatus
from hearth.engines.transformers.folder import inspect_folder, is_model_folder
from hearth.engines.vllm.cluster import (
    RAY_INSTALL_HINT,
    check_layout,
    ray_version,
    require_ray,
    world_size,
)
from hearth.engines.vllm.launcher import INSTALL_HINT, VLLMLauncher, locate_vllm, vllm_version
from hearth.errors import SetupError
from hearth.secrets import Secret, resolve_secret

log = logging.getLogger(__name__)


def claim(model: ModelSettings, context: EngineContext) -> int | None:
    """A model folder on an NVIDIA machine where vLLM is installed."""
    folder = is_model_folder(Path(model.model).expanduser())
    if folder and context.accelerators.kind == "nvidia" and vllm_version() is not None:
        return HARDWARE
    return None


def build(entry: ModelEntry, context: EngineContext) -> BuiltEngine:
    model = entry.settings
    binary = locate_vllm(context.accelerators)
    require_ray(model.vllm, vllm_here=vllm_version() is not None)
    warning = check_layout(entry.name, model.vllm, context.accelerators)
    if warning is not None:
        log.warning("%s", warning)
    world, here = world_size(model.vllm), len(context.accelerators.gpus)
    if world > here:
        log.info(
            "%s: vLLM runs on %d GPUs of a Ray cluster, %d of them on this node",
            entry.name,
            world,
            here,
        )
    path = Path(model.model).expanduser()
    task = model.task or (inspect_folder(path).task if is_model_folder(path) else "chat")
    launcher = VLLMLauncher(
        binary=binary,
        model=model.model,
        alias=entry.name,
        settings=model.vllm,
        task=task,
        dtype=model.dtype,
        capabilities=Capabilities.for_task(task, tools=True),
        env=_environment(entry),
    )
    # vLLM holds GPU memory (gpu_memory_utilization of each GPU it uses, on every node), not
    # Hearth's RAM budget.
    return BuiltEngine(launcher, 0, entry.slots(ENGINE.default_slots))


def status(name: str, settings: Settings, accelerators: Accelerators) -> EngineStatus:
    try:
        binary = locate_vllm(accelerators)
    except SetupError as exc:
        version = vllm_version()
        return EngineStatus(name, False, version, str(exc) if version else INSTALL_HINT)
    version = vllm_version()
    if version is None:  # a `vllm` of another environment: its packages are out of sight
        return EngineStatus(name, True, None, binary)
    ray = ray_version()
    if ray is not None:
        return EngineStatus(name, True, version, f"{binary}; Ray {ray} for several nodes")
    wanting = sorted(
        entry
        for entry, model in settings.models.items()
        if model.vllm.distributed_executor_backend == "ray"
    )
    if wanting:
        return EngineStatus(
            name,
            False,
            version,
            f"{binary}; {', '.join(wanting)} use distributed_executor_backend: ray, and Ray is "
            f"not installed: {RAY_INSTALL_HINT}",
        )
    return EngineStatus(name, True, version, f"{binary}; one node (several need Ray)")


def _environment(entry: ModelEntry) -> dict[str, Secret]:
    """The entry's vllm.env with `env:`/`file:` references resolved; a missing one is a
    ConfigError naming the key, never the value."""
    return {
        variable: resolve_secret(value, f"models.{entry.name}.vllm.env.{variable}")
        for variable, value in entry.settings.vllm.env.items()
    }


ENGINE = EngineSpec(names=("vllm",), build=build, default_slots=64, claim=claim, status=status)
