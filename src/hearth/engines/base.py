"""The interface every engine launcher implements: command line, readiness probe, capabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can be asked for; endpoints check these before forwarding."""

    chat: bool = False
    completion: bool = False
    embeddings: bool = False
    rerank: bool = False
    tools: bool = False

    def names(self) -> list[str]:
        return [name for name, on in vars(self).items() if on]


@dataclass(frozen=True)
class EngineCommand:
    """How to start one engine process listening on a given port."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health_path: str = "/health"


class Launcher(Protocol):
    """Builds the command for one model on one engine kind."""

    @property
    def kind(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def command(self, host: str, port: int) -> EngineCommand: ...

    def prepare_request(self, body: dict[str, Any]) -> None:
        """Adjust an OpenAI request body, in place, for this engine's quirks."""
        ...
