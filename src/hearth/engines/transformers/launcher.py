"""The command line of Hearth's transformers worker for one model folder."""

from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.engines.base import Capabilities, EngineCommand
from hearth.errors import SetupError

INSTALL_HINT = "pip install 'hearth-gateway[transformers]'"
REQUIRED = ("torch", "transformers", "sentence-transformers")
# Hearth serves files already on disk: the worker never reaches a hub.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def installed_versions() -> dict[str, str | None]:
    """The worker's packages and their versions (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in REQUIRED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def require_transformers() -> None:
    missing = [name for name, version in installed_versions().items() if version is None]
    if missing:
        raise SetupError(
            f"the transformers engine needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; run: {INSTALL_HINT}"
        )


@dataclass(frozen=True)
class TransformersLauncher:
    model_dir: Path
    alias: str
    task: str
    capabilities: Capabilities = field(default=Capabilities(embeddings=True))
    device: str | None = None
    dtype: str | None = None
    threads: int | None = None
    python: str = sys.executable
    kind: str = "transformers"

    @property
    def model_file(self) -> None:
        return None  # no single model file for Ollama's listings to read

    def command(self, host: str, port: int) -> EngineCommand:
        argv = [
            self.python, "-m", "hearth.engines.transformers.worker",
            "--model", str(self.model_dir),
            "--host", host,
            "--port", str(port),
            "--task", self.task,
            "--name", self.alias,
        ]  # fmt: skip
        if self.device is not None:
            argv += ["--device", self.device]
        if self.dtype is not None:
            argv += ["--dtype", self.dtype]
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        return EngineCommand(argv=argv, env=dict(OFFLINE_ENV), health_path="/health")

    def prepare_request(self, body: dict[str, Any]) -> None:
        return None
