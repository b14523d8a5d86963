"""A loaded model: its replicas (one engine process each, with its own slots) and which one a
request goes to. Most models have one replica; `replicas: N` or autoscaling gives more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hearth.deployments.deployment import LocalDeployment
from hearth.engines.supervisor import EngineState, EngineSupervisor
from hearth.scheduler.affinity import REQUEST_COST, Choice, PrefixTable, ReplicaLoad, choose
from hearth.scheduler.slots import RequestSlots


def replica_name(model: str, index: int) -> str:
    """Stable per index, so an engine's log and saved caches follow it across restarts: the
    model's own name for the first replica, `name#i` for the others."""
    return model if index == 0 else f"{model}#{index}"


@dataclass
class Replica:
    index: int
    supervisor: EngineSupervisor
    slots: RequestSlots
    placement: str  # where it runs, for `hearth ps`: "gpu 1", "cpus 0-3", "shared"
    started_at: float
    last_used: float
    in_flight: int = 0  # requests holding it: decoding or queued for a slot
    backlog: int = 0  # their estimated work, in prompt chunks (see affinity)

    @property
    def name(self) -> str:
        return self.supervisor.name

    @property
    def ready(self) -> bool:
        return self.supervisor.state is EngineState.READY

    @property
    def free(self) -> bool:
        """A request would start at once: a slot is free and nobody is queued."""
        return self.slots.busy < self.slots.slots and not self.slots.queued

    def load(self) -> ReplicaLoad:
        return ReplicaLoad(self.index, self.in_flight, self.backlog, self.ready, self.free)

    def describe(self, now: float) -> dict[str, Any]:
        process = self.supervisor.process
        return {
            "name": self.name,
            "index": self.index,
            "state": self.supervisor.state.value,
            "pid": process.pid if process else None,
            "placement": self.placement,
            "in_flight": self.in_flight,
            "backlog": self.backlog,
            "slots_busy": self.slots.busy,
            "queued": self.slots.queued,
            "idle_for_s": None if self.in_flight else round(now - self.last_used, 1),
            "restarts": self.supervisor.restarts,
            "last_error": self.supervisor.last_error,
        }


class Lease:
    """One request's hold on a replica: its engine, why that replica, and the request's share
    of the replica's backlog (see affinity), which shrinks to what generating costs once the
    engine has evaluated the prompt."""

    def __init__(self, replica: Replica, choice: Choice) -> None:
        self.supervisor = replica.supervisor
        self.replica = replica.name  # the model's name for the first replica, `name#i` after
        self.reason = choice.reason
        self.matched = choice.matched  # chunks of the prompt's prefix the replica served last
        self._on = replica
        self._work = choice.work
        replica.in_flight += 1
        replica.backlog += choice.work

    def prompt_evaluated(self) -> None:
        """The engine has started answering (its first event): the prompt is behind it."""
        if self._work > REQUEST_COST:
            self._on.backlog -= self._work - REQUEST_COST
            self._work = REQUEST_COST

    def release(self) -> None:
        self._on.in_flight -= 1
        self._on.backlog -= self._work
        self._work = 0


class SlotTotals:
    """A model's slots over all its replicas, read the way one replica's are."""

    def __init__(self, replicas: Sequence[Replica]) -> None:
        self.slots = sum(r.slots.slots for r in replicas)
        self.busy = sum(r.slots.busy for r in replicas)
        self.queued = sum(r.slots.queued for r in replicas)


@dataclass
class LoadedModel:
    deployment: LocalDeployment
    replicas: dict[int, Replica]
    keep_alive: float
    loaded_at: float
    last_used: float
    prefixes: PrefixTable = field(default_factory=PrefixTable)
    turn: int = 0  # round-robin position, for ties and for replica_routing: round_robin

    @property
    def in_flight(self) -> int:
        return sum(r.in_flight for r in self.replicas.values())

    @property
    def supervisor(self) -> EngineSupervisor:
        """The first replica's engine: the one that answers for the model (readiness, token
        counting, the engine's own metrics)."""
        return self.replicas[min(self.replicas)].supervisor

    @property
    def slots(self) -> SlotTotals:
        return SlotTotals(list(self.replicas.values()))

    @property
    def memory_bytes(self) -> int:
        return self.deployment.memory_bytes * len(self.replicas)

    def expires_at(self) -> float | None:
        """Monotonic time of the idle unload, or None while in use or kept forever."""
        if self.in_flight or self.keep_alive < 0:
            return None
        return self.last_used + self.keep_alive

    def choose(self, prefix: Sequence[bytes]) -> tuple[Replica, Choice]:
        """The replica for one request with this prompt-prefix fingerprint."""
        loads = [self.replicas[i].load() for i in sorted(self.replicas)]
        choice = choose(loads, self.prefixes, prefix, self.turn, self.deployment.replicas.routing)
        self.turn += 1
        return self.replicas[choice.replica], choice

    def wants_another(self) -> bool:
        """Autoscaling: every replica is up and none has a free slot, and there is room for
        one more. (While one starts, no other: it will take the next requests.)"""
        if len(self.replicas) >= self.deployment.replicas.max:
            return False
        return all(r.ready and not r.free for r in self.replicas.values())

    def idle_extras(self, now: float) -> list[Replica]:
        """Replicas above min_replicas idle for longer than the replicas' idle time, the last
        index first (the first replica, which answers for the model, always stays; one still
        starting has had no chance to be used)."""
        extra = len(self.replicas) - self.deployment.replicas.min
        idle = self.deployment.replicas.idle
        candidates = [
            r
            for i, r in sorted(self.replicas.items(), reverse=True)
            if i != 0
            and r.in_flight == 0
            and now - max(r.last_used, r.supervisor.ready_since or 0.0) >= idle
            and r.supervisor.state is not EngineState.STARTING
        ]
        return candidates[: max(0, extra)]

    def describe(self, now: float) -> dict[str, Any]:
        expires = self.expires_at()
        totals, first = self.slots, self.supervisor
        return {
            "name": self.deployment.name,
            "state": first.state.value,
            "pid": first.process.pid if first.process else None,
            "in_flight": self.in_flight,
            "slots": totals.slots,
            "slots_busy": totals.busy,
            "queued": totals.queued,
            "loaded_for_s": round(now - self.loaded_at, 1),
            "idle_for_s": None if self.in_flight else round(now - self.last_used, 1),
            "keep_alive_s": self.keep_alive,
            "expires_in_s": None if expires is None else round(max(0.0, expires - now), 1),
            "restarts": sum(r.supervisor.restarts for r in self.replicas.values()),
            "last_error": first.last_error,
            "replica_routing": self.deployment.replicas.routing,
            "replicas": [self.replicas[i].describe(now) for i in sorted(self.replicas)],
        }
