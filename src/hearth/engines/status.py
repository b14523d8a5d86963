"""One row of `hearth doctor`'s engine table: whether this machine can run an engine, its
version, and where it is or what to install."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineStatus:
    engine: str
    available: bool
    version: str | None
    detail: str  # where it is, or why not and what to install
    # Hearth's default engine: without it the bundled model cannot be served, a problem to fix
    # (the others are optional).
    required: bool = False
