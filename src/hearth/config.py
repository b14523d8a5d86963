"""Hearth's settings: one validated object, layered file (YAML) < environment (HEARTH_*) < flags.

Every layer is checked for unknown keys before the layers are merged, so a typo is an error
that names the key and where it came from rather than a silently ignored default.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ByteSize, ConfigDict, Field, ValidationError

from hearth.errors import ConfigError

BUNDLED_MODEL_NAME = "gemma-3-270m"
ENV_PREFIX = "HEARTH_"
ENV_NESTING = "__"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hearth"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hearth"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class EngineSettings(_Strict):
    """How Hearth runs its local llama.cpp engines."""

    parallel: int = Field(8, ge=1, le=256, description="Parallel slots (concurrent sequences).")
    ctx_size: int = Field(
        16384, ge=256, description="Context tokens shared by all slots (each gets ctx/parallel)."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads; default: llama.cpp's own.")
    gpu_layers: int | None = Field(None, ge=-1, description="Layers to offload to a GPU.")
    startup_timeout: float = Field(180.0, gt=0, description="Seconds to wait for a model load.")
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds between SIGTERM and SIGKILL.")
    restart_backoff_max: float = Field(30.0, gt=0, description="Longest wait between restarts.")
    extra_args: list[str] = Field(default_factory=list, description="Extra llama-server flags.")


_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float) -> float:
    """'5m' → 300.0, '30s' → 30.0, 90 → 90.0; a negative value means "forever"."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration; use seconds or a number with ms, s, m or h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]


class ModelSettings(_Strict):
    """One servable model: which file, under which names, with which engine settings.

    Engine settings left unset fall back to the top-level `engine` section.
    """

    model: str = Field(
        description="The stored model it serves (see `hearth ls`) or a path to a .gguf file."
    )
    aliases: list[str] = Field(default_factory=list, description="Other names clients may use.")
    ctx_size: int | None = Field(None, ge=256)
    parallel: int | None = Field(None, ge=1, le=256)
    threads: int | None = Field(None, ge=1)
    gpu_layers: int | None = Field(None, ge=-1)
    chat_template: str | None = Field(
        None, description="A Jinja chat template file, or a template shipped with Hearth."
    )
    keep_alive: Duration | None = Field(
        None, description="Idle time before unloading (0: after each request; negative: never)."
    )
    extra_args: list[str] | None = None
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Request fields applied when a request leaves them out (e.g. temperature).",
    )

    def engine(self, defaults: EngineSettings) -> EngineSettings:
        """The engine settings for this model: its own values over the top-level ones."""
        own = {
            key: value
            for key in ("ctx_size", "parallel", "threads", "gpu_layers", "extra_args")
            if (value := getattr(self, key)) is not None
        }
        return defaults.model_copy(update=own)


class Settings(_Strict):
    """Everything `hearth serve` needs to know; see docs/configuration.md."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    llama_server: Path | None = Field(
        None, description="Path of the llama-server binary (else PATH, then Hearth's tools)."
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    upstream_timeout: float = Field(
        600.0, gt=0, description="Seconds an engine may take to answer one request."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="'json': one JSON object per line, for log pipelines."
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)
    keep_alive: Duration = Field(
        300.0, description="Default idle time before a model is unloaded (negative: never)."
    )
    memory_budget: ByteSize | None = Field(
        None,
        description="Memory local models may use, e.g. '12GiB'; default: memory_fraction of RAM.",
    )
    memory_fraction: float = Field(
        0.8, gt=0, le=1, description="Share of physical RAM used when memory_budget is unset."
    )
    request_queue_size: int = Field(
        64, ge=0, description="Requests per model that may wait for a free slot before 503."
    )
    load_queue_size: int = Field(
        32, ge=0, description="Requests that may wait for room to load a model before 503."
    )
    models: dict[str, ModelSettings] = Field(
        default_factory=dict, description="Servable models by public name, besides the bundled one."
    )
    preload: list[str] = Field(
        default_factory=lambda: [BUNDLED_MODEL_NAME],
        description="Models loaded at start; /ready waits for them.",
    )

    def effective_memory_budget(self) -> int:
        if self.memory_budget is not None:
            return int(self.memory_budget)
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(physical * self.memory_fraction)

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def tools_dir(self) -> Path:
        return self.cache_dir / "tools"


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Build the settings from a YAML file, the environment and command-line flags (in that order).

    Flags whose value is None are treated as not given.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        layers.append((str(config_file), read_config_file(config_file)))
    layers.append(("environment", read_environment(os.environ if environ is None else environ)))
    layers.append(("command line", {k: v for k, v in flags.items() if v is not None}))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, values in layers:
        _check_known_keys(Settings, values, source)
        _deep_merge(merged, values, origin, source)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, origin)) from None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {path} must be a mapping of settings, not a {type(values).__name__}"
        )
    return values


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """HEARTH_PORT=9 → {"port": "9"}; HEARTH_ENGINE__PARALLEL=4 → {"engine": {"parallel": "4"}}.

    Values that look like JSON lists or objects are decoded so list settings can be set too.
    """
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or raw == "":
            continue
        path = name[len(ENV_PREFIX) :].lower().split(ENV_NESTING)
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
        value: Any = raw
        if raw[:1] in "[{":
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(raw)
        node[path[-1]] = value
    return values


def _check_known_keys(
    model: type[BaseModel], values: Mapping[str, Any], source: str, prefix: str = ""
) -> None:
    for key, value in values.items():
        field = model.model_fields.get(key)
        dotted = f"{prefix}{key}"
        if field is None:
            known = ", ".join(sorted(model.model_fields))
            hint = (
                f"HEARTH_{dotted.upper().replace('.', ENV_NESTING)}"
                if source == "environment"
                else dotted
            )
            raise ConfigError(f"unknown setting '{hint}' in {source}; known settings here: {known}")
        sub = field.annotation
        if isinstance(value, Mapping) and isinstance(sub, type) and issubclass(sub, BaseModel):
            _check_known_keys(sub, value, source, prefix=f"{dotted}.")


def _deep_merge(
    into: dict[str, Any],
    values: Mapping[str, Any],
    origin: dict[str, str],
    source: str,
    prefix: str = "",
) -> None:
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value, origin, source, prefix=f"{dotted}.")
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
            origin[dotted] = source


def _describe_validation_error(exc: ValidationError, origin: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        source = next(
            (origin[k] for k in (dotted, dotted.rsplit(".", 1)[0]) if k in origin), "defaults"
        )
        problems.append(f"{dotted}: {error['msg']} (got {error.get('input')!r} from {source})")
    return "invalid settings: " + "; ".join(problems)
