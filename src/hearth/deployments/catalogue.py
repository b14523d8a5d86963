"""The model catalogue: public model names (and their aliases), the routes behind them, and the
deployments those routes send requests to.

Every local model and every remote deployment is a public name of its own (a route with one
deployment); the `routes` settings add names served by several deployments under a strategy.
"""

from __future__ import annotations

from collections.abc import Callable

from hearth.config import BreakerSettings
from hearth.deployments.breaker import CircuitBreaker
from hearth.deployments.deployment import (
    Deployment,
    LocalDeployment,
    RemoteDeployment,
    Route,
    Target,
)
from hearth.errors import ModelNotFound
from hearth.models.store import split_revision


class Catalogue:
    def __init__(self, breaker: BreakerSettings | None = None) -> None:
        self.breaker = breaker or BreakerSettings()
        self._deployments: dict[str, Deployment] = {}
        self._routes: dict[str, Route] = {}
        self._names: dict[str, Route] = {}  # route names and aliases
        self._revisions: dict[str, str] = {}  # `NAME@abc1234` → the whole commit

    def add(self, deployment: Deployment) -> None:
        """Add a deployment, reachable under its own name and aliases."""
        if deployment.name in self._deployments:
            raise ValueError(f"the deployment name {deployment.name!r} is used twice")
        deployment.stats.breaker = CircuitBreaker(
            deployment.name,
            failures=self.breaker.failures,
            window=self.breaker.window,
            cooldown=self.breaker.cooldown,
        )
        self._deployments[deployment.name] = deployment
        self.add_route(Route(deployment.name, [Target(deployment)], aliases=deployment.aliases))

    def add_route(self, route: Route) -> None:
        for name in (route.name, *route.aliases):
            if name in self._names:
                raise ValueError(f"the model name {name!r} is used twice")
        for name in (route.name, *route.aliases):
            self._names[name] = route
        self._routes[route.name] = route

    def add_revisions(self, revisions: dict[str, str]) -> None:
        """Names of pulled models' revisions (`NAME@abc1234`, each a name or alias here) with
        their whole commits, so that a client may give 7 to 40 digits of one, as git does."""
        self._revisions.update(revisions)

    def _canonical(self, name: str) -> str:
        """`NAME@abc1234` for `NAME@abc12345…` when exactly one known revision matches."""
        if name in self._names:
            return name
        base, revision = split_revision(name)
        if revision is None:
            return name
        found = [
            known
            for known, commit in self._revisions.items()
            if known.rpartition("@")[0] == base and commit.startswith(revision)
        ]
        return found[0] if len(found) == 1 else name

    def resolve(self, name: str) -> Route:
        """The route of a public name or alias."""
        try:
            return self._names[self._canonical(name)]
        except KeyError:
            raise ModelNotFound(name, self.names()) from None

    def deployment(self, name: str) -> Deployment | None:
        """The deployment of that name; a revision's name stands for the model serving it."""
        name = self._canonical(name)
        if name not in self._deployments and name in self._revisions and name in self._names:
            route = self._names[name]
            return route.targets[0].deployment if len(route.targets) == 1 else None
        return self._deployments.get(name)

    def local(self, name: str) -> LocalDeployment:
        """The local model a name or alias stands for."""
        local = self.resolve(name).local
        if local is None:
            raise ModelNotFound(name, [d.name for d in self.deployments()])
        return local

    def get(self, name: str) -> LocalDeployment | None:
        """The local model of that name (not alias), if any."""
        deployment = self._deployments.get(name)
        return deployment if isinstance(deployment, LocalDeployment) else None

    def names(self) -> list[str]:
        """Every name a client may use: models, routes and their aliases."""
        return sorted(self._names)

    def names_visible(self, allows: Callable[[str, str], bool] | None) -> list[str]:
        """The names a caller may know of: `allows(name, route name)` decides (None: all)."""
        if allows is None:
            return self.names()
        return [name for name in self.names() if allows(name, self._names[name].name)]

    def routes(self) -> list[Route]:
        return [self._routes[name] for name in sorted(self._routes)]

    def deployments(self) -> list[LocalDeployment]:
        """The local models."""
        return [d for d in self.all_deployments() if isinstance(d, LocalDeployment)]

    def remotes(self) -> list[RemoteDeployment]:
        return [d for d in self.all_deployments() if isinstance(d, RemoteDeployment)]

    def all_deployments(self) -> list[Deployment]:
        return [self._deployments[name] for name in sorted(self._deployments)]

    def carry_over(self, previous: Catalogue) -> None:
        """Keep the breakers and latency figures of deployments that a reload left in place."""
        for name, deployment in self._deployments.items():
            old = previous._deployments.get(name)
            if old is not None and old.kind == deployment.kind:
                deployment.stats = old.stats
                # Its state (open, failures so far) stays; the thresholds are the new settings'.
                breaker = deployment.stats.breaker
                breaker.threshold = self.breaker.failures
                breaker.window = self.breaker.window
                breaker.cooldown = self.breaker.cooldown
