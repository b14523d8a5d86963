"""What an engine module declares to be registered: an EngineSpec (its names, its factory, its
default slots, how strongly it claims a model entry that names no engine, its `hearth doctor`
row), and what the factory is given (the entry, an EngineContext) and gives back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hearth.config import ModelSettings, Settings
from hearth.engines.base import Launcher
from hearth.engines.gpu import Accelerators
from hearth.engines.status import EngineStatus
from hearth.models.store import ModelStore

# How strongly an engine claims an entry that names none; the highest claim wins.
FALLBACK = 10  # serves the format on any machine (transformers for a model folder)
HARDWARE = 50  # the format on the hardware it is built for (vLLM on NVIDIA, MLX on a Mac)
FORMAT = 100  # the engine of that format (llama.cpp for a GGUF)
OWN_SETTINGS = 200  # the entry carries settings only this engine reads (a `command`)


@dataclass(frozen=True)
class EngineContext:
    """What a factory may need besides the entry: the settings, the machine, the model store and
    the files Hearth ships or found."""

    settings: Settings
    accelerators: Accelerators
    store: ModelStore
    bundled_model: Path  # the bundled GGUF
    llama_server: Path | None = None  # None: not found (a gateway runs without it)


@dataclass(frozen=True)
class ModelEntry:
    """One model entry to build: its public name, its settings and the engine chosen for it."""

    name: str
    settings: ModelSettings
    engine: str

    def slots(self, default: int) -> int:
        """Requests Hearth sends the engine at once: the entry's `parallel`, else `default`."""
        return self.settings.parallel or default


@dataclass(frozen=True)
class BuiltEngine:
    """What a factory gives back for one entry."""

    launcher: Launcher
    memory_bytes: int  # estimated need, counted against the memory budget
    slots: int
    unavailable: str | None = None  # why it cannot start on this machine (clients hear this)
    # The LoRA adapters loaded with it, by name: a request may pick one (llama.cpp).
    adapters: tuple[str, ...] = ()


Factory = Callable[[ModelEntry, EngineContext], BuiltEngine]
Claim = Callable[[ModelSettings, EngineContext], int | None]
StatusCheck = Callable[[str, Settings, Accelerators], EngineStatus]


def claims_nothing(model: ModelSettings, context: EngineContext) -> int | None:
    """The claim of an engine that serves only entries naming it."""
    return None


@dataclass(frozen=True)
class EngineSpec:
    """One engine, as its module declares it.

    `build` makes the launcher of an entry (a SetupError there says what to install);
    `claim` says how strongly the engine wants an entry that names no engine (None: not at
    all; see FALLBACK…OWN_SETTINGS), the first name standing for the engine; `status` is its
    `hearth doctor` row per name (None: nothing to check)."""

    names: tuple[str, ...]
    build: Factory
    default_slots: int
    claim: Claim = claims_nothing
    status: StatusCheck | None = None
