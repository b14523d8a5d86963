"""Choosing the engine of a local model entry (by its `engine` setting, else by format and
hardware) and building the launchers of the engines other than llama.cpp."""

from __future__ import annotations

from pathlib import Path

from hearth.config import EngineKind, ModelSettings, Settings
from hearth.engines.base import Capabilities, Launcher
from hearth.engines.gpu import Accelerators, preferred_engine
from hearth.engines.mlx.launcher import MLXLauncher, require_mlx
from hearth.engines.transformers.folder import FolderInfo, inspect_folder, is_model_folder
from hearth.engines.transformers.launcher import TransformersLauncher, require_transformers
from hearth.engines.vllm.launcher import VLLMLauncher, locate_vllm, vllm_version
from hearth.errors import ConfigError, SetupError

# Slots of an engine other than llama.cpp when the entry sets no `parallel`.
DEFAULT_SLOTS = {"transformers": 4, "vllm": 64, "mlx": 4, "mlx-vlm": 4}


def choose_engine(
    name: str, model: ModelSettings, in_store: bool, accelerators: Accelerators
) -> EngineKind:
    """The entry's engine: as set, else a GGUF (stored or a .gguf path) → llama.cpp, a model
    folder → what the hardware prefers (vLLM on NVIDIA, MLX on a Mac, else transformers)."""
    if model.engine is not None:
        return model.engine
    path = Path(model.model).expanduser()
    if in_store or path.suffix == ".gguf":
        return "llama.cpp"
    if is_model_folder(path):

        def installed(kind: str) -> bool:
            if kind == "vllm":
                return vllm_version() is not None
            try:
                require_mlx(kind)
            except SetupError:
                return False
            return True

        preferred = preferred_engine("folder", accelerators, installed)
        return "vllm" if preferred == "vllm" else "mlx" if preferred == "mlx" else "transformers"
    raise ConfigError(
        f"models.{name}.model: {model.model!r} is not a stored model (see `hearth ls`; get one "
        "with `hearth pull` or `hearth import`), an existing .gguf file, nor a Hugging Face model "
        "folder (with a config.json); for a hub repository id served by vLLM or MLX, set `engine`"
    )


def build_launcher(
    name: str,
    model: ModelSettings,
    engine: EngineKind,
    settings: Settings,
    accelerators: Accelerators,
) -> tuple[Launcher, int, int]:
    """The launcher of a non-llama.cpp entry, its estimated memory need and its slots.
    Missing packages or hardware are a ConfigError that names the fix."""
    slots = model.parallel or DEFAULT_SLOTS[engine]
    try:
        if engine == "transformers":
            launcher, need = _transformers(name, model, settings)
            return launcher, need, slots
        if engine == "vllm":
            binary = locate_vllm(accelerators)
            task = model.task or _folder_task(model) or "chat"
            return (
                VLLMLauncher(
                    binary=binary,
                    model=model.model,
                    alias=name,
                    settings=model.vllm,
                    task=task,
                    dtype=model.dtype,
                    capabilities=_capabilities(task, tools=True),
                ),
                0,  # vLLM holds GPU memory, not Hearth's RAM budget
                slots,
            )
        require_mlx(engine)
        return (
            MLXLauncher(
                model=model.model,
                alias=name,
                kind=engine,
                extra_args=list(model.extra_args or []),
            ),
            _folder_size(model.model),
            slots,
        )
    except SetupError as exc:
        raise ConfigError(f"models.{name}: {exc}") from None


def _transformers(name: str, model: ModelSettings, settings: Settings) -> tuple[Launcher, int]:
    path = Path(model.model).expanduser()
    if not is_model_folder(path):
        raise ConfigError(
            f"models.{name}.model: the transformers engine serves a Hugging Face model folder "
            f"(with a config.json); {model.model!r} is not one"
        )
    require_transformers()
    info: FolderInfo = inspect_folder(path.resolve())
    task = model.task or info.task
    capabilities = info.capabilities(task)
    launcher = TransformersLauncher(
        model_dir=path.resolve(),
        alias=name,
        task=task,
        capabilities=capabilities,
        device=model.device,
        dtype=model.dtype,
        threads=model.threads or settings.engine.threads,
    )
    # Weights in memory plus the framework's own footprint.
    return launcher, int(info.size_bytes * 1.2) + 300 * 1024 * 1024


def _capabilities(task: str, tools: bool = False) -> Capabilities:
    if task == "embeddings":
        return Capabilities(embeddings=True)
    if task == "rerank":
        return Capabilities(rerank=True)
    return Capabilities(chat=True, completion=True, tools=tools)


def _folder_task(model: ModelSettings) -> str | None:
    path = Path(model.model).expanduser()
    return inspect_folder(path).task if is_model_folder(path) else None


def _folder_size(model: str) -> int:
    path = Path(model).expanduser()
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
