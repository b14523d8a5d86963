"""What routing is asked to do, and what it notes of one request as it goes: the typed values
between the pipeline and the router."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hearth.auth.keys import KeyRecord
from hearth.deployments.deployment import Route


@dataclass(frozen=True)
class Escalation:
    """A cascade attempt whose answer failed the route's checks (routing/cascade.py): its tokens
    were generated and are accounted for, though the client got another deployment's answer."""

    deployment: str
    usage: dict[str, Any] | None
    reason: str  # one of routing.cascade.REJECTIONS


@dataclass
class Trace:
    """What happened to one request, filled in as it goes: by the pipeline (model, started),
    the router (deployment, attempts, cache) and the relay (usage, ttft). Read by accounting,
    metrics and the access log once the answer has ended."""

    started: float  # perf_counter() when the request arrived
    model: str | None = None  # the public name it was routed under (the metrics' model label)
    deployment: str | None = None
    attempts: int = 0
    upstream_seconds: float = 0.0  # spent waiting on deployments before the answer started
    ttft: float | None = None
    usage: dict[str, Any] | None = None
    cache: str | None = None  # "hit" or "miss" when the cache was consulted
    # For a local model with replicas: the one that answered, why that one (prefix, busy,
    # least_busy, round_robin; see scheduler/affinity.py) and how much of the prompt it held,
    # in bytes of the rendered prompt (routing/prompt_prefix.py).
    replica: str | None = None
    replica_choice: str | None = None
    prefix_matched: int = 0
    # What the client finally got, when that is not the HTTP status it was sent: a stream that
    # broke off (its error's status), was left by the client (499) or cut at shutdown (503).
    status: int | None = None
    # Why the request went where it did, on a route with rules (routing/rules.py): "rule:2 tools",
    # "rule:1 class:code", "strategy:priority". Built from the settings only, never request text.
    route_reason: str | None = None
    # On a cascade route: the attempts whose answers were rejected, in order.
    escalations: list[Escalation] = field(default_factory=list)


@dataclass
class RoutedRequest:
    route: Route
    path: str  # under the OpenAI base, e.g. "/chat/completions"
    fields: dict[str, Any]  # the request body as the client sent it
    capability: str
    request_id: str
    trace: Trace
    keep_alive: float | None = None
    priority: int = 0
    cache_control: str = ""
    inputs: frozenset[str] = frozenset()  # what else the model must accept: "vision" for images
    headers: Mapping[str, str] | None = None  # the client's request headers (for route rules)
    caller: KeyRecord | None = None  # the key it came with (for route rules)
    asked: Route | None = None  # the route the client named, when a rule chose `route` instead

    @property
    def stream(self) -> bool:
        return bool(self.fields.get("stream"))

    @property
    def public_name(self) -> str:
        """The model name the answer carries: the route the client asked for."""
        return (self.asked or self.route).name
