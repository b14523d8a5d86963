"""A local model's replicas from its settings: how many, how requests pick one, and each
replica's launcher pinned to its own GPU or its own CPU cores."""

from __future__ import annotations

import os
from collections.abc import Callable

from hearth.config import ModelSettings, Settings
from hearth.deployments.deployment import Replicas
from hearth.engines.base import Launcher
from hearth.engines.gpu import Accelerators
from hearth.engines.placement import PinnedLauncher, Placement, plan_placements

# An extra replica's idle time when the model's keep_alive says nothing usable (0 or forever).
DEFAULT_REPLICA_IDLE_S = 300.0


def usable_cpus() -> set[int]:
    """The cores this process may run on (its affinity, e.g. a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def build_replicas(
    model: ModelSettings,
    settings: Settings,
    keep_alive: float,
    accelerators: Accelerators,
    build_launcher: Callable[[ModelSettings], Launcher],
) -> Replicas:
    """The entry's replicas. Each replica index up to max_replicas gets its own placement; on
    CPU cores it also gets `threads` = its cores, unless the settings set threads (llama.cpp's
    default counts every core of the machine, which would oversubscribe a share)."""
    low, high = model.replica_range()
    if model.replica_keep_alive is not None:
        idle = model.replica_keep_alive
    else:
        idle = keep_alive if keep_alive > 0 else DEFAULT_REPLICA_IDLE_S
    if high == 1:
        return Replicas(routing=model.replica_routing, idle=idle)
    launchers = []
    for placement in plan_placements(high, accelerators, os.environ, usable_cpus()):
        own = model
        if placement.cpus and model.threads is None and settings.engine.threads is None:
            own = model.model_copy(update={"threads": len(placement.cpus)})
        launchers.append(_pinned(build_launcher(own), placement))
    return Replicas(low, high, model.replica_routing, idle, tuple(launchers))


def _pinned(launcher: Launcher, placement: Placement) -> Launcher:
    return launcher if placement == Placement() else PinnedLauncher(launcher, placement)
