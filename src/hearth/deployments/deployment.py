"""Deployments: the upstreams a public model name can be sent to.

A local deployment is a model served by an engine process Hearth starts and stops (see the
scheduler); a remote deployment is a base URL someone else runs. Both speak the OpenAI protocol,
and both carry the figures routing decides by: requests in flight, a moving average of the time to
the first token, a price, and a circuit breaker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from hearth.config import CascadeSettings, DeploymentTimeouts, Price
from hearth.deployments.breaker import CircuitBreaker
from hearth.engines.base import Capabilities, Launcher
from hearth.models.presets import Preset
from hearth.secrets import Secret

# Weight of the newest sample in the time-to-first-token moving average.
LATENCY_SMOOTHING = 0.3


@dataclass
class DeploymentStats:
    breaker: CircuitBreaker
    in_flight: int = 0
    ttft: float | None = None  # moving average, seconds; None until the first answer

    def observe_ttft(self, seconds: float) -> None:
        if self.ttft is None:
            self.ttft = seconds
        else:
            self.ttft += LATENCY_SMOOTHING * (seconds - self.ttft)


def _stats(name: str) -> DeploymentStats:
    return DeploymentStats(CircuitBreaker(name))


@dataclass(frozen=True)
class Replicas:
    """How many engine processes serve a local model and how a request picks one (settings:
    replicas, min_replicas, max_replicas, replica_routing, replica_keep_alive)."""

    min: int = 1
    max: int = 1
    routing: Literal["affinity", "round_robin"] = "affinity"
    idle: float = 300.0  # seconds an extra replica (above min) stays up unused
    # The launcher of each replica index, pinned to its device; empty: the deployment's own.
    launchers: tuple[Launcher, ...] = ()

    @property
    def autoscaled(self) -> bool:
        return self.max > self.min


@dataclass
class LocalDeployment:
    """A model served by an engine process that Hearth starts and stops (see scheduler)."""

    name: str
    launcher: Launcher
    keep_alive: float
    aliases: list[str] = field(default_factory=list)
    memory_bytes: int = 0  # estimated need when loaded, for the scheduler's budget
    slots: int = 1  # requests the engine decodes at once; more wait in Hearth's queue
    defaults: dict[str, Any] = field(default_factory=dict)  # request fields the client left out
    max_output_tokens: int = 4096  # the most one request may generate (settings: same name)
    created: int = field(default_factory=lambda: int(time.time()))
    price: Price = field(default_factory=Price)
    # Why it cannot be loaded (its engine is not installed); requests get a 503 saying so.
    unavailable: str | None = None
    replicas: Replicas = field(default_factory=Replicas)
    # The LoRA adapters its engine loads (models/adapters.py); a request picks one by name.
    adapters: tuple[str, ...] = ()
    stats: DeploymentStats = field(init=False, repr=False)

    kind: Literal["local"] = "local"

    def __post_init__(self) -> None:
        self.stats = _stats(self.name)

    @property
    def capabilities(self) -> Capabilities:
        return self.launcher.capabilities

    def replica_launcher(self, index: int) -> Launcher:
        """The launcher of replica `index` (0 is the first), pinned where it should run."""
        launchers = self.replicas.launchers
        return launchers[index] if index < len(launchers) else self.launcher

    @property
    def capacity(self) -> int | None:
        return self.slots


@dataclass
class RemoteDeployment:
    """An OpenAI-compatible server Hearth proxies to: Ollama, vLLM, TGI, LocalAI, a cloud API."""

    name: str
    url: str  # base URL of its OpenAI API, without a trailing slash (…/v1)
    model: str  # its own name for the model
    capabilities: Capabilities
    api_key: Secret | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeouts: DeploymentTimeouts = field(default_factory=DeploymentTimeouts)
    max_concurrency: int | None = None
    price: Price = field(default_factory=Price)
    aliases: list[str] = field(default_factory=list)
    health_check: bool = True
    created: int = field(default_factory=lambda: int(time.time()))
    stats: DeploymentStats = field(init=False, repr=False)

    kind: Literal["remote"] = "remote"

    def __post_init__(self) -> None:
        self.stats = _stats(self.name)

    @property
    def capacity(self) -> int | None:
        return self.max_concurrency

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.api_key is not None:
            headers["authorization"] = f"Bearer {self.api_key.reveal()}"
        return headers

    def describe(self) -> str:
        """How errors and logs name it: never with its key."""
        return f"deployment '{self.name}' ({self.url})"


Deployment = LocalDeployment | RemoteDeployment


@dataclass
class Target:
    deployment: Deployment
    weight: float = 1.0


@dataclass
class Route:
    """A public model name and the deployments that serve it."""

    name: str
    targets: list[Target]
    strategy: str = "priority"
    aliases: list[str] = field(default_factory=list)
    # A preset's route (models/presets.py): the base's targets, with its system prompt and
    # defaults applied to each request by the pipeline.
    preset: Preset | None = None
    # The LoRA adapter its requests use (a `model+adapter` name, or a preset's): the pipeline
    # puts it in each request's `adapter` field (pipeline/adapter.py).
    adapter: str | None = None
    # The checks of a `cascade` route (routing/cascade.py); None: the defaults.
    cascade: CascadeSettings | None = None

    def capabilities(self) -> list[str]:
        """What at least one of its deployments supports."""
        names: list[str] = []
        for target in self.targets:
            names += [n for n in target.deployment.capabilities.names() if n not in names]
        return names

    @property
    def local(self) -> LocalDeployment | None:
        """The local model when the route is just that model."""
        if len(self.targets) == 1 and isinstance(self.targets[0].deployment, LocalDeployment):
            return self.targets[0].deployment
        return None
