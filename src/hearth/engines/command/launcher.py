"""The command line of a `command` engine's server: the entry's own, with {port}, {host} and
{model} filled in at each start; requests are forwarded as they are, naming the served model."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hearth.engines.base import Capabilities, EngineCommand

PLACEHOLDERS = ("host", "model", "port")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]+)\}")
HEALTH_HINT = (
    "set the model's health_path to a path its server answers 200 on once ready (e.g. /v1/models)"
)


def placeholders(texts: Iterable[str]) -> set[str]:
    """The placeholder names ({port} → port) used in these strings."""
    return {name for text in texts for name in _PLACEHOLDER.findall(text)}


def whisper_inference_path(argv: Iterable[str]) -> str:
    """Where a whisper.cpp server answers transcriptions: its --request-path (default none)
    followed by its --inference-path (default /inference), as its command line sets them."""
    options = {"--request-path": "", "--inference-path": "/inference"}
    for flag, value in itertools.pairwise(argv):
        if flag in options:
            options[flag] = value
    return options["--request-path"] + options["--inference-path"]


def fill(text: str, values: dict[str, str]) -> str:
    """`text` with each known placeholder replaced; other braces (JSON, say) are left alone."""
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), text)


@dataclass(frozen=True)
class CommandLauncher:
    argv: tuple[str, ...]  # with placeholders
    model: str  # what {model} stands for: the entry's `model`
    alias: str
    capabilities: Capabilities = field(default=Capabilities(chat=True, completion=True))
    health_path: str = "/health"
    served_model: str | None = None  # the `model` its server expects; default: `model`
    env: dict[str, str] = field(default_factory=dict)  # values may hold placeholders too
    kind: str = "command"

    @property
    def model_file(self) -> None:
        return None  # whatever the server loads is its own business

    def command(self, host: str, port: int) -> EngineCommand:
        values = {"host": host, "port": str(port), "model": self.model}
        return EngineCommand(
            argv=[fill(arg, values) for arg in self.argv],
            env={name: fill(value, values) for name, value in self.env.items()},
            health_path=self.health_path,
            health_hint=HEALTH_HINT,
        )

    def prepare_request(self, body: dict[str, Any]) -> None:
        # Clients use Hearth's name (or an alias); servers such as vLLM and SGLang refuse any
        # name but the one they serve.
        body["model"] = self.served_model or self.model
