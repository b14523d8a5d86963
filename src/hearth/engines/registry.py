"""The engine registry: the engines Hearth can run, by name. `default_registry()` builds it from
the built-in engine modules and the `hearth.engines` entry points of installed packages; the
catalogue asks it which engine serves an entry and for that entry's launcher."""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable

from hearth.config import ModelSettings, Settings
from hearth.engines.command.engine import ENGINE as COMMAND
from hearth.engines.gpu import Accelerators
from hearth.engines.llama_cpp.engine import ENGINE as LLAMA_CPP
from hearth.engines.mlx.engine import ENGINE as MLX
from hearth.engines.spec import BuiltEngine, EngineContext, EngineSpec, ModelEntry
from hearth.engines.status import EngineStatus
from hearth.engines.transformers.engine import ENGINE as TRANSFORMERS
from hearth.engines.vllm.engine import ENGINE as VLLM
from hearth.errors import ConfigError, SetupError

log = logging.getLogger(__name__)

BUILT_IN = (LLAMA_CPP, TRANSFORMERS, VLLM, MLX, COMMAND)
# Installed packages add engines here: [project.entry-points."hearth.engines"] NAME = "pkg.mod:SPEC"
ENTRY_POINT_GROUP = "hearth.engines"


class EngineRegistry:
    """Engines by name, in the order they were registered."""

    def __init__(self, specs: Iterable[EngineSpec] = ()) -> None:
        self._specs: list[EngineSpec] = []
        self._by_name: dict[str, EngineSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: EngineSpec) -> None:
        if not spec.names:
            raise ValueError("an engine needs at least one name")
        taken = [name for name in spec.names if name in self._by_name]
        if taken:
            raise ValueError(f"engine name {', '.join(taken)} is already registered")
        self._specs.append(spec)
        self._by_name.update(dict.fromkeys(spec.names, spec))

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def specs(self) -> list[EngineSpec]:
        return list(self._specs)

    def get(self, name: str, where: str = "engine") -> EngineSpec:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self.names())
            raise ConfigError(f"{where}: {name!r} is not an engine; known: {known}") from None

    def choose(self, name: str, model: ModelSettings, context: EngineContext) -> str:
        """The entry's engine: as set, else the engine that claims it most strongly (a GGUF →
        llama.cpp, a model folder → what the hardware prefers, a `command` → command)."""
        if model.engine is not None:
            self.get(model.engine, f"models.{name}.engine")
            return model.engine
        best: tuple[int, str] | None = None
        for spec in self._specs:
            claim = spec.claim(model, context)
            if claim is not None and (best is None or claim > best[0]):
                best = (claim, spec.names[0])
        if best is None:
            raise ConfigError(
                f"models.{name}.model: {model.model!r} is not a stored model (see `hearth ls`; get "
                "one with `hearth pull` or `hearth import`), an existing .gguf file, nor a Hugging "
                "Face model folder (with a config.json); for a hub repository id served by vLLM or "
                "MLX, set `engine`"
            )
        return best[1]

    def build(self, name: str, model: ModelSettings, context: EngineContext) -> BuiltEngine:
        """The launcher of one entry, its memory need and its slots. What this machine lacks
        to run it (a package, a GPU) is a ConfigError that names the fix."""
        engine = self.choose(name, model, context)
        try:
            return self.get(engine).build(ModelEntry(name, model, engine), context)
        except SetupError as exc:
            raise ConfigError(f"models.{name}: {exc}") from None

    def statuses(self, settings: Settings, accelerators: Accelerators) -> list[EngineStatus]:
        """`hearth doctor`'s row of each engine name that has something to check."""
        return [
            spec.status(name, settings, accelerators)
            for spec in self._specs
            if spec.status is not None
            for name in spec.names
        ]


def default_registry(plugins: bool = True) -> EngineRegistry:
    """The built-in engines, then (unless `plugins` is False) those installed packages declare
    in the `hearth.engines` entry-point group. A plugin that fails to load, or takes a name
    already registered, is left out with a warning: Hearth still serves everything else."""
    registry = EngineRegistry(BUILT_IN)
    if plugins:
        for spec in plugin_engines():
            try:
                registry.register(spec)
            except ValueError as exc:
                log.warning("engine plugin %s ignored: %s", "/".join(spec.names), exc)
    return registry


def plugin_engines() -> list[EngineSpec]:
    """Each `hearth.engines` entry point names an EngineSpec (`package.module:ENGINE`)."""
    found: list[EngineSpec] = []
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = point.load()
        except Exception as exc:  # a broken third-party package: anything can go wrong
            log.warning("engine plugin %s (%s) cannot be loaded: %s", point.name, point.value, exc)
            continue
        if not isinstance(spec, EngineSpec):
            log.warning(
                "engine plugin %s (%s) is a %s, not an EngineSpec; ignored",
                point.name,
                point.value,
                type(spec).__name__,
            )
            continue
        found.append(spec)
    return found
