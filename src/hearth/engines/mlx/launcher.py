"""The `mlx_lm.server` and MLX-VLM server command lines, and checking for a Mac to run them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

from hearth.engines.base import Capabilities, EngineCommand
from hearth.engines.gpu import is_apple_silicon
from hearth.errors import SetupError

# engine kind → (Python module that must be importable, PyPI package, server module)
SERVERS = {
    "mlx": ("mlx_lm", "mlx-lm", "mlx_lm.server"),
    "mlx-vlm": ("mlx_vlm", "mlx-vlm", "mlx_vlm.server"),
}


def mlx_version(kind: str) -> str | None:
    try:
        return importlib.metadata.version(SERVERS[kind][1])
    except importlib.metadata.PackageNotFoundError:
        return None


def require_mlx(kind: str) -> None:
    """A SetupError naming the fix when this is not Apple silicon or the package is missing."""
    module, package, _ = SERVERS[kind]
    if not is_apple_silicon():
        raise SetupError(
            f"the {kind} engine needs a Mac with Apple silicon; this is "
            f"{platform.system()} {platform.machine()}: use engine transformers or llama.cpp"
        )
    if importlib.util.find_spec(module) is None:
        raise SetupError(f"the {kind} engine is not installed; run: pip install {package}")


@dataclass(frozen=True)
class MLXLauncher:
    model: str  # an MLX model folder or a hub repository id
    alias: str
    kind: str = "mlx"  # or "mlx-vlm"
    adapter_path: str | None = None
    extra_args: list[str] = field(default_factory=list)
    python: str = sys.executable
    capabilities: Capabilities = field(default=Capabilities(chat=True, completion=True))

    @property
    def model_file(self) -> None:
        return None  # no single model file for Ollama's listings to read

    def command(self, host: str, port: int) -> EngineCommand:
        argv = [
            self.python, "-m", SERVERS[self.kind][2],
            "--model", self.model,
            "--host", host,
            "--port", str(port),
        ]  # fmt: skip
        if self.adapter_path is not None:
            argv += ["--adapter-path", self.adapter_path]
        argv += self.extra_args
        return EngineCommand(argv=argv, health_path="/health")

    def prepare_request(self, body: dict[str, Any]) -> None:
        # mlx_lm.server loads whatever model a request names: name the one it serves.
        body["model"] = self.model
