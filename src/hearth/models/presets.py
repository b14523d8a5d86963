"""Presets (Ollama's custom models): a name that serves a base model with a system prompt and
default request fields, stored as `<models_dir>/presets/<quoted name>.json`.

A preset holds no weights and starts no engine: the catalogue gives it the base's deployments
(and its adapter, one of the base's LoRA adapters), and the pipeline prepends its system message
(when a chat request has none) and fills in its defaults (where the request sets nothing) before
routing.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from hearth.config import ADAPTER_NAME, ADAPTER_NAME_RULE
from hearth.errors import ModelStoreError
from hearth.models.store import (
    BUILT_IN_NAMES,
    ModelStore,
    is_valid_name,
    validate_name,
    write_json_atomically,
)
from hearth.wire.base import SamplingParams

MAX_SYSTEM_CHARS = 64 * 1024
MAX_TEMPLATE_CHARS = 64 * 1024

# Ollama's parameter names and the request fields they become (same name unless said).
_SAME = (
    "temperature", "top_p", "top_k", "min_p", "typical_p", "seed", "stop", "repeat_penalty",
    "repeat_last_n", "presence_penalty", "frequency_penalty", "mirostat", "mirostat_tau",
    "mirostat_eta", "max_tokens",
)  # fmt: skip
FIELD_OF = {**{name: name for name in _SAME}, "num_predict": "max_tokens"}
# Engine settings: every preset of a base shares its one engine, so they belong to the base.
ENGINE_PARAMETERS = frozenset(
    {"num_ctx", "num_gpu", "num_thread", "num_batch", "num_keep", "use_mmap", "numa", "main_gpu"}
)


@dataclass(frozen=True)
class Preset:
    name: str
    base: str
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # Ollama's names, as given
    template: str | None = None  # stored and shown; prompts use the base's chat template
    added: datetime | None = None
    adapter: str | None = None  # a LoRA adapter of the base (models/adapters.py), by name

    @property
    def defaults(self) -> dict[str, Any]:
        """The request fields its parameters become."""
        return {FIELD_OF[key]: value for key, value in self.parameters.items()}

    def apply(self, fields: dict[str, Any], capability: str) -> dict[str, Any]:
        """A request's fields with the preset's system message (a chat with none of its own)
        and defaults (fields the request leaves out) added."""
        if capability not in ("chat", "completion"):
            return fields
        out = dict(fields)
        messages = out.get("messages")
        if self.system and isinstance(messages, list):
            has_own = any(
                isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages
            )
            if not has_own:
                out["messages"] = [{"role": "system", "content": self.system}, *messages]
        for key, value in self.defaults.items():
            if key == "max_tokens" and out.get("max_completion_tokens") is not None:
                continue
            if out.get(key) is None:
                out[key] = value
        return out


def check_parameters(parameters: dict[str, Any], where: str = "parameters") -> dict[str, Any]:
    """`parameters` if each is one a preset may set, with a valid value; `ModelStoreError`
    naming the first that is not (`where.NAME`)."""
    if not isinstance(parameters, dict):
        raise ModelStoreError(f"'{where}' must be an object of parameter names and values")
    for key, value in parameters.items():
        if key in ENGINE_PARAMETERS:
            raise ModelStoreError(
                f"'{where}.{key}' is an engine setting, shared by the base model and all its "
                f"presets; set it on the base model (models.<base>.{_engine_setting(key)} in the "
                "settings) instead"
            )
        if key not in FIELD_OF:
            known = ", ".join(sorted(FIELD_OF))
            raise ModelStoreError(
                f"'{where}.{key}' is not a parameter a preset sets; known: {known}"
            )
        if key in ("num_predict", "max_tokens") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ModelStoreError(f"'{where}.{key}' must be a whole number of tokens, at least 1")
    fields = {FIELD_OF[key]: value for key, value in parameters.items() if key in _SAME}
    try:
        SamplingParams.model_validate({"model": "preset", **fields})
    except ValidationError as exc:
        problem = exc.errors()[0]
        name = str(problem["loc"][0]) if problem["loc"] else "?"
        given = next((k for k in parameters if FIELD_OF[k] == name), name)
        raise ModelStoreError(f"'{where}.{given}': {problem['msg']}") from None
    return dict(parameters)


def parse_parameter(text: str) -> tuple[str, Any]:
    """`k=v` from the command line: the value read as JSON when it is (numbers, true, lists),
    as a string otherwise."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ModelStoreError(f"--param {text!r}: write it as NAME=VALUE, e.g. temperature=0.2")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _engine_setting(key: str) -> str:
    return {"num_ctx": "ctx_size", "num_gpu": "gpu_layers", "num_thread": "threads"}.get(key, key)


class PresetStore:
    """The presets under `<models_dir>/presets/`; names are shared with the model store."""

    def __init__(self, models_dir: Path) -> None:
        self.models = ModelStore(models_dir)
        self.folder = self.models.presets_dir

    def list(self) -> builtins.list[Preset]:
        if not self.folder.is_dir():
            return []
        found = [self._read(path) for path in self.folder.glob("*.json")]
        return sorted((p for p in found if p is not None), key=lambda p: p.name.lower())

    def get(self, name: str) -> Preset | None:
        if not is_valid_name(name):
            return None
        return self._read(self._path(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and is_valid_name(name) and self._path(name).is_file()

    def users_of(self, base: str) -> builtins.list[str]:
        """The presets built on `base`."""
        return [p.name for p in self.list() if p.base == base]

    def create(self, preset: Preset, *, base_known: bool, replace: bool = False) -> Preset:
        """Record `preset`. `base_known` says whether its base is a servable name (the caller
        knows the settings and the catalogue; the store alone does not)."""
        validate_name(preset.name)
        if preset.name in BUILT_IN_NAMES or preset.name in self.models:
            raise ModelStoreError(
                f"'{preset.name}' is a model in the store; a preset needs a name of its own"
            )
        if preset.name in self and not replace:
            raise ModelStoreError(
                f"a preset named '{preset.name}' already exists; remove it first with "
                f"`hearth rm {preset.name}` or pick another name"
            )
        if preset.base == preset.name:
            raise ModelStoreError(f"the preset '{preset.name}' cannot be built on itself")
        if preset.base in self:
            raise ModelStoreError(
                f"'{preset.base}' is itself a preset; build on the model it is built on instead"
            )
        if not base_known:
            raise ModelStoreError(
                f"there is no model named '{preset.base}' to build on; `hearth ls` lists them"
            )
        if preset.system is not None and len(preset.system) > MAX_SYSTEM_CHARS:
            raise ModelStoreError(f"'system' is at most {MAX_SYSTEM_CHARS} characters")
        if preset.template is not None and len(preset.template) > MAX_TEMPLATE_CHARS:
            raise ModelStoreError(f"'template' is at most {MAX_TEMPLATE_CHARS} characters")
        check_parameters(preset.parameters)
        if preset.adapter is not None and not ADAPTER_NAME.match(preset.adapter):
            raise ModelStoreError(
                f"{preset.adapter!r} cannot name an adapter: use {ADAPTER_NAME_RULE}"
            )
        stamped = Preset(
            preset.name,
            preset.base,
            preset.system,
            dict(preset.parameters),
            preset.template,
            preset.added or datetime.now(UTC),
            preset.adapter,
        )
        write_json_atomically(self._path(preset.name), _to_json(stamped))
        return stamped

    def remove(self, name: str) -> Preset:
        preset = self.get(name)
        if preset is None:
            raise ModelStoreError(f"there is no preset named '{name}'")
        self._path(name).unlink(missing_ok=True)
        return preset

    def _path(self, name: str) -> Path:
        return self.folder / f"{quote(name, safe='')}.json"

    def _read(self, path: Path) -> Preset | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            added = data.get("added")
            return Preset(
                name=str(data["name"]),
                base=str(data["from"]),
                system=data.get("system"),
                parameters=dict(data.get("parameters") or {}),
                template=data.get("template"),
                added=datetime.fromisoformat(added) if added else None,
                adapter=data.get("adapter"),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelStoreError(
                f"the preset {path} is unreadable ({exc}); delete it and create the preset again"
            ) from None


def _to_json(preset: Preset) -> dict[str, Any]:
    return {
        "name": preset.name,
        "from": preset.base,
        "system": preset.system,
        "parameters": preset.parameters,
        "template": preset.template,
        "added": preset.added.isoformat() if preset.added else None,
        "adapter": preset.adapter,
    }
