"""The vLLM engine as the registry sees it: `vllm serve` for a model folder or a hub repository
id, on an NVIDIA GPU; the preferred engine for folders on such a machine when vLLM is installed."""

from __future__ import annotations

from pathlib import Path

from hearth.config import ModelSettings, Settings
from hearth.engines.base import Capabilities
from hearth.engines.gpu import Accelerators
from hearth.engines.spec import HARDWARE, BuiltEngine, EngineContext, EngineSpec, ModelEntry
from hearth.engines.status import EngineStatus
from hearth.engines.transformers.folder import inspect_folder, is_model_folder
from hearth.engines.vllm.launcher import INSTALL_HINT, VLLMLauncher, locate_vllm, vllm_version
from hearth.errors import SetupError


def claim(model: ModelSettings, context: EngineContext) -> int | None:
    """A model folder on an NVIDIA machine where vLLM is installed."""
    folder = is_model_folder(Path(model.model).expanduser())
    if folder and context.accelerators.kind == "nvidia" and vllm_version() is not None:
        return HARDWARE
    return None


def build(entry: ModelEntry, context: EngineContext) -> BuiltEngine:
    model = entry.settings
    binary = locate_vllm(context.accelerators)
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
    )
    # vLLM holds GPU memory (gpu_memory_utilization), not Hearth's RAM budget.
    return BuiltEngine(launcher, 0, entry.slots(ENGINE.default_slots))


def status(name: str, settings: Settings, accelerators: Accelerators) -> EngineStatus:
    try:
        binary = locate_vllm(accelerators)
    except SetupError as exc:
        version = vllm_version()
        return EngineStatus(name, False, version, str(exc) if version else INSTALL_HINT)
    return EngineStatus(name, True, vllm_version(), binary)


ENGINE = EngineSpec(names=("vllm",), build=build, default_slots=64, claim=claim, status=status)
