"""Reading Hearth's settings from their layers: a YAML file < the environment (HEARTH_*) < flags.

Every layer is checked for unknown keys before the layers are merged, so a typo is an error
that names the key and where it came from rather than a silently ignored default. HEARTH_*
variables that hold secrets (those an `env:NAME` reference in any layer names, and the reserved
RESERVED_ENV) are not settings and are left to `hearth.secrets`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hearth.config import Settings
from hearth.errors import ConfigError

ENV_PREFIX = "HEARTH_"
ENV_NESTING = "__"
# Variables the documentation names as secrets (`auth.admin_key: env:HEARTH_ADMIN_KEY`): never
# settings, even while no reference names them (a leftover export must not stop Hearth).
# HEARTH_URL and HEARTH_API_KEY are where `hearth chat`/`hearth run` connect, not settings.
RESERVED_ENV = frozenset({"HEARTH_ADMIN_KEY", "HEARTH_URL", "HEARTH_API_KEY"})
SECRET_PREFIX = "env:"


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Build the settings from a YAML file, the environment and command-line flags (in that order).

    Flags whose value is None are treated as not given.
    """
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        layers.append((str(config_file), read_config_file(config_file)))
    given = {k: v for k, v in flags.items() if v is not None}
    ours = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    secrets = RESERVED_ENV | secret_references([*(v for _, v in layers), given, ours])
    layers.append(("environment", read_environment(environ, skip=secrets)))
    layers.append(("command line", given))

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


def secret_references(values: Any) -> frozenset[str]:
    """The variable names that `env:NAME` references anywhere in `values` (nested mappings and
    lists; a mapping of variables counts its values) point at."""
    found: set[str] = set()
    stack = [values]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if value.startswith(SECRET_PREFIX) and len(value) > len(SECRET_PREFIX):
                found.add(value[len(SECRET_PREFIX) :])
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return frozenset(found)


def read_environment(
    environ: Mapping[str, str], skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """HEARTH_PORT=9 → {"port": "9"}; HEARTH_ENGINE__PARALLEL=4 → {"engine": {"parallel": "4"}}.

    Values that look like JSON lists or objects are decoded so list settings can be set too.
    Variables named in `skip` (secrets) are not settings.
    """
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or raw == "" or name in skip:
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
