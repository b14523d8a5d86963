"""Where each replica of a model runs: its own NVIDIA GPU (CUDA_VISIBLE_DEVICES), or its own
share of the CPU cores (the process's CPU affinity), so replicas do not compete for one device.
`PinnedLauncher` puts a replica's placement on every command its launcher builds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hearth.engines.base import Capabilities, EngineCommand, Launcher, ModelFile
from hearth.engines.gpu import Accelerators


@dataclass(frozen=True)
class Placement:
    """One replica's device: environment for the engine (its GPU) and the cores it may use."""

    env: Mapping[str, str] = field(default_factory=dict)
    cpus: frozenset[int] | None = None  # None: wherever the OS schedules it

    def describe(self) -> str:
        if "CUDA_VISIBLE_DEVICES" in self.env:
            return f"gpu {self.env['CUDA_VISIBLE_DEVICES']}"
        if self.cpus is not None:
            return f"cpus {_ranges(sorted(self.cpus))}"
        return "shared"


def plan_placements(
    count: int, accelerators: Accelerators, environ: Mapping[str, str], cpus: Iterable[int]
) -> list[Placement]:
    """Placements for replicas 0..count-1. With NVIDIA GPUs (those CUDA_VISIBLE_DEVICES lists,
    when set), replica i gets GPU i mod n. Without, the cores this process may use are split
    into `count` disjoint, contiguous sets (the remainder to the first ones); with fewer cores
    than replicas, replica i gets core i mod cores (shared). One replica, or Apple's one GPU,
    stays unpinned: nothing to split."""
    if count <= 1 or accelerators.kind == "metal":
        return [Placement() for _ in range(max(count, 1))]
    if accelerators.kind == "nvidia" and accelerators.gpus:
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        devices = (
            [d.strip() for d in visible.split(",") if d.strip()]
            if visible is not None
            else [str(gpu.index) for gpu in accelerators.gpus]
        )
        if devices:
            return [
                Placement(env={"CUDA_VISIBLE_DEVICES": devices[i % len(devices)]})
                for i in range(count)
            ]
    cores = sorted(cpus)
    if not cores:
        return [Placement() for _ in range(count)]
    if len(cores) < count:
        return [Placement(cpus=frozenset({cores[i % len(cores)]})) for i in range(count)]
    share, extra = divmod(len(cores), count)
    placements, start = [], 0
    for i in range(count):
        size = share + (1 if i < extra else 0)
        placements.append(Placement(cpus=frozenset(cores[start : start + size])))
        start += size
    return placements


@dataclass(frozen=True)
class PinnedLauncher:
    """A launcher whose engine runs where its placement says; everything else is the inner
    launcher's (attributes it does not define here are looked up there too)."""

    inner: Launcher
    placement: Placement

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def model_file(self) -> ModelFile | None:
        return self.inner.model_file

    def command(self, host: str, port: int) -> EngineCommand:
        command = self.inner.command(host, port)
        return replace(
            command,
            env={**command.env, **self.placement.env},
            cpus=self.placement.cpus if self.placement.cpus is not None else command.cpus,
        )

    def prepare_request(self, body: dict[str, Any]) -> None:
        self.inner.prepare_request(body)

    def __getattr__(self, name: str) -> Any:
        if name == "inner" or name.startswith("__"):  # not set yet (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)


def _ranges(cores: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts: list[str] = []
    start = previous = cores[0]
    for core in [*cores[1:], None]:
        if core is not None and core == previous + 1:
            previous = core
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if core is not None:
            start = previous = core
    return ",".join(parts)
