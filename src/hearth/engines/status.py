"""Which engines this machine can run, their versions, and what to install for the others
(for `hearth doctor`)."""

from __future__ import annotations

from dataclasses import dataclass

from hearth.engines.gpu import Accelerators
from hearth.engines.mlx.launcher import SERVERS, mlx_version, require_mlx
from hearth.engines.transformers.launcher import INSTALL_HINT, installed_versions
from hearth.engines.vllm.launcher import INSTALL_HINT as VLLM_HINT
from hearth.engines.vllm.launcher import locate_vllm, vllm_version
from hearth.errors import SetupError


@dataclass(frozen=True)
class EngineStatus:
    engine: str
    available: bool
    version: str | None
    detail: str  # where it is, or why not and what to install


def transformers_status() -> EngineStatus:
    versions = installed_versions()
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        return EngineStatus(
            "transformers", False, None, f"{', '.join(missing)} missing; {INSTALL_HINT}"
        )
    shown = ", ".join(f"{name} {version}" for name, version in versions.items())
    return EngineStatus("transformers", True, versions["transformers"], shown)


def vllm_status(accelerators: Accelerators) -> EngineStatus:
    try:
        binary = locate_vllm(accelerators)
    except SetupError as exc:
        version = vllm_version()
        return EngineStatus("vllm", False, version, str(exc) if version else VLLM_HINT)
    return EngineStatus("vllm", True, vllm_version(), binary)


def mlx_status(kind: str) -> EngineStatus:
    try:
        require_mlx(kind)
    except SetupError as exc:
        return EngineStatus(kind, False, mlx_version(kind), str(exc))
    return EngineStatus(kind, True, mlx_version(kind), f"python -m {SERVERS[kind][2]}")


def other_engines(accelerators: Accelerators) -> list[EngineStatus]:
    """Every engine besides llama.cpp (which `hearth doctor` checks with its binary)."""
    return [
        transformers_status(),
        vllm_status(accelerators),
        mlx_status("mlx"),
        mlx_status("mlx-vlm"),
    ]
