"""A Launcher for tests/support/fake_engine.py, with different faults on successive starts."""

from __future__ import annotations

import sys
from pathlib import Path

from hearth.engines.base import Capabilities, EngineCommand

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


def fake_engine_argv(host: str, port: int, *options: str) -> list[str]:
    return [sys.executable, str(FAKE_ENGINE), "--host", host, "--port", str(port), *options]


class FakeLauncher:
    """Start k uses the k-th option list; the last one is repeated for every later start."""

    kind = "fake"
    capabilities = Capabilities(chat=True, completion=True)

    def __init__(self, *starts: list[str]) -> None:
        self.starts = list(starts) or [[]]
        self.commands: list[EngineCommand] = []

    def command(self, host: str, port: int) -> EngineCommand:
        options = self.starts[min(len(self.commands), len(self.starts) - 1)]
        command = EngineCommand(argv=fake_engine_argv(host, port, *options))
        self.commands.append(command)
        return command
