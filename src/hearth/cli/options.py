"""Options shared by commands that read settings, and turning them into a Settings object."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hearth.config import Settings
from hearth.errors import ConfigError
from hearth.settings_layers import load_settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where models, logs and state live.  [default: ~/.local/share/hearth]",
    )(func)
    func = click.option(
        "--config", "-c", "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="HEARTH_CONFIG", show_envvar=True,
        help="YAML settings file (flags > HEARTH_* environment > file).",
    )(func)  # fmt: skip
    return func


def read_settings(config_file: Path | None, **flags: Any) -> Settings:
    """Settings from the file, the environment (as it is now) and these flags."""
    return load_settings(config_file, environ=_environ_without_config(), **flags)


def settings_from(config_file: Path | None, **flags: Any) -> Settings:
    """Load settings, or exit with the problem named (no traceback for a typo)."""
    try:
        return read_settings(config_file, **flags)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _environ_without_config() -> dict[str, str]:
    import os

    # HEARTH_CONFIG names the file; it is not itself a setting.
    return {k: v for k, v in os.environ.items() if k != "HEARTH_CONFIG"}
