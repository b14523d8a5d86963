"""Credentials in settings: `env:NAME` and `file:PATH` references resolved at start, and a value
that never shows itself in a repr, a log line or an error."""

from __future__ import annotations

import os
from pathlib import Path

from hearth.errors import ConfigError


class Secret:
    """A credential that never shows itself in a repr, a log line or an error."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def resolve_secret(reference: str, where: str) -> Secret:
    """'env:NAME' → that variable; 'file:PATH' → the file's first line; anything else is the
    key itself. Errors name the reference, never a value; 'env:' or 'file:' with nothing after
    is an error, not a key."""
    kind, _, rest = reference.partition(":")
    if kind in ("env", "file") and not rest.strip():
        raise ConfigError(
            f"{where}: '{kind}:' names no {'variable' if kind == 'env' else 'file'}; write "
            f"{kind}:{'NAME' if kind == 'env' else 'PATH'}"
        )
    if kind == "env" and rest:
        value = os.environ.get(rest)
        if not value:
            raise ConfigError(f"{where}: the environment variable {rest} is not set")
        return Secret(value)
    if kind == "file" and rest:
        path = Path(rest).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{where}: {path} is empty")
        return Secret(value)
    return Secret(reference)
