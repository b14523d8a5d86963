"""What Ollama's listings say about a model (size, digest, details, metadata), gathered from the
catalogue, the model store and the GGUF header. A name served by remote deployments has no file:
its listing carries its name and capabilities only."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hearth.deployments.deployment import LocalDeployment, Route
from hearth.engines.base import ModelFile
from hearth.errors import ModelStoreError
from hearth.models.gguf_info import GGUFInfo, parameter_size, read_gguf_header, read_gguf_info
from hearth.models.store import ModelStore, StoredModel

_JSON_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class ModelFacts:
    name: str  # the catalogue's name
    route: Route
    path: Path | None
    stored: StoredModel | None
    info: GGUFInfo | None

    @property
    def local(self) -> LocalDeployment | None:
        return self.route.local

    @property
    def file(self) -> ModelFile | None:
        """The model file its engine loads (a GGUF), with its template and load settings."""
        return self.local.launcher.model_file if self.local is not None else None

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.local.defaults) if self.local is not None else {}

    @property
    def size(self) -> int:
        if self.stored is not None and self.stored.size is not None:
            return self.stored.size
        with contextlib.suppress(OSError):
            return self.path.stat().st_size if self.path else 0
        return 0

    @property
    def modified_at(self) -> str:
        when = self.stored.added if self.stored is not None else None
        if when is None and self.path is not None:
            with contextlib.suppress(OSError):
                when = datetime.fromtimestamp(self.path.stat().st_mtime, UTC)
        return (when or datetime.now(UTC)).isoformat().replace("+00:00", "Z")

    @property
    def digest(self) -> str:
        """The file's sha256 where Hearth verified one (pulled and bundled models keep it next to
        the file); otherwise a stable identifier of the file (path, size, modification time)."""
        if self.path is None:
            return hashlib.sha256(self.name.encode()).hexdigest()
        marker = self.path.with_name(self.path.name + ".sha256")
        with contextlib.suppress(OSError):
            published = marker.read_text().strip()
            if len(published) == 64:
                return published
        try:
            stat = self.path.stat()
            identity = f"{self.path}:{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            identity = str(self.path)
        return hashlib.sha256(identity.encode()).hexdigest()

    def details(self) -> dict[str, Any]:
        info = self.info
        arch = info.architecture if info else None
        return {
            "parent_model": "",
            "format": "gguf",
            "family": arch or "",
            "families": [arch] if arch else None,
            "parameter_size": parameter_size(info.parameter_count if info else None),
            "quantization_level": (info.quantization if info else None) or "",
        }

    def capabilities(self) -> list[str]:
        names = self.route.capabilities()
        found = ["completion"] if {"chat", "completion"} & set(names) else []
        found += [c for c in ("tools", "embeddings", "vision") if c in names]
        return ["embedding" if c == "embeddings" else c for c in found]

    def template(self) -> str:
        if self.info is not None and self.info.chat_template:
            return self.info.chat_template
        file = self.file
        if file is not None and file.chat_template is not None:
            with contextlib.suppress(OSError):
                return file.chat_template.read_text()
        return ""

    def model_info(self) -> dict[str, Any]:
        """The GGUF metadata, as Ollama shows it: scalars and short arrays (long ones, such as the
        vocabulary, are left out); the chat template is under `template` instead."""
        if self.path is None:
            return {}
        try:
            header = read_gguf_header(self.path)
        except ModelStoreError:
            return {}
        out: dict[str, Any] = {}
        for key, value in header.metadata.items():
            if key == "tokenizer.chat_template":
                continue
            if isinstance(value, _JSON_SCALARS) or (
                isinstance(value, list) and all(isinstance(v, _JSON_SCALARS) for v in value)
            ):
                out[key] = value
        if self.info is not None and self.info.parameter_count:
            out.setdefault("general.parameter_count", self.info.parameter_count)
        return dict(sorted(out.items()))

    def parameters(self) -> str:
        """Ollama's `parameters` text: the model's request defaults and its context size."""
        values = self.defaults
        if self.file is not None:
            values["num_ctx"] = self.file.settings.ctx_size
        return "\n".join(f"{key:<30} {_parameter(value)}" for key, value in values.items())

    def modelfile(self, with_path: bool = True) -> str:
        """Ollama's Modelfile; `with_path` False names the model instead of its file (for
        callers who may use a model but have no business knowing the server's file system)."""
        lines = ["# Modelfile generated by Hearth (the template is Jinja, as llama.cpp uses)"]
        lines.append(f"FROM {self.path}" if self.path and with_path else f"FROM {self.name}")
        if template := self.template():
            lines.append(f'TEMPLATE """{template}"""')
        for key, value in self.defaults.items():
            lines.append(f"PARAMETER {key} {_parameter(value)}")
        return "\n".join(lines) + "\n"


def model_facts(name: str, route: Route, store: ModelStore) -> ModelFacts:
    """The facts of one catalogue entry (reads the disk: call it in a worker thread)."""
    local = route.local
    file = local.launcher.model_file if local is not None else None
    path = file.path if file is not None else None
    stored = _stored(local.name, path, store) if local is not None else None
    info = None
    if path is not None:
        with contextlib.suppress(ModelStoreError):
            info = read_gguf_info(path)
    return ModelFacts(name, route, path, stored, info)


def _stored(name: str, path: Path | None, store: ModelStore) -> StoredModel | None:
    try:
        if name in store:
            return store.get(name)
        return next((m for m in store.list() if path is not None and m.path == path), None)
    except ModelStoreError:
        return None


def _parameter(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)
