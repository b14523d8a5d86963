"""The MLX engines as the registry sees them: `mlx_lm.server` (mlx) and the MLX-VLM server
(mlx-vlm, vision) on Apple silicon; mlx is the preferred engine for folders on a Mac where
mlx-lm is installed."""

from __future__ import annotations

from pathlib import Path

from hearth.config import ModelSettings, Settings
from hearth.engines.base import Capabilities
from hearth.engines.gpu import Accelerators
from hearth.engines.mlx.launcher import SERVERS, MLXLauncher, mlx_version, require_mlx
from hearth.engines.spec import HARDWARE, BuiltEngine, EngineContext, EngineSpec, ModelEntry
from hearth.engines.status import EngineStatus
from hearth.engines.transformers.folder import is_model_folder
from hearth.errors import SetupError


def claim(model: ModelSettings, context: EngineContext) -> int | None:
    """A model folder on Apple silicon where mlx-lm is installed (mlx-vlm only when named)."""
    folder = is_model_folder(Path(model.model).expanduser())
    if folder and context.accelerators.kind == "metal" and _installed("mlx"):
        return HARDWARE
    return None


def build(entry: ModelEntry, context: EngineContext) -> BuiltEngine:
    require_mlx(entry.engine)
    model = entry.settings
    vision = entry.engine == "mlx-vlm"
    launcher = MLXLauncher(
        model=model.model,
        alias=entry.name,
        kind=entry.engine,
        extra_args=list(model.extra_args or []),
        capabilities=Capabilities(chat=True, completion=True, vision=vision),
    )
    return BuiltEngine(launcher, _folder_size(model.model), entry.slots(ENGINE.default_slots))


def status(name: str, settings: Settings, accelerators: Accelerators) -> EngineStatus:
    try:
        require_mlx(name)
    except SetupError as exc:
        return EngineStatus(name, False, mlx_version(name), str(exc))
    return EngineStatus(name, True, mlx_version(name), f"python -m {SERVERS[name][2]}")


ENGINE = EngineSpec(
    names=("mlx", "mlx-vlm"), build=build, default_slots=4, claim=claim, status=status
)


def _installed(kind: str) -> bool:
    try:
        require_mlx(kind)
    except SetupError:
        return False
    return True


def _folder_size(model: str) -> int:
    path = Path(model).expanduser()
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
