"""The model catalogue: public model names (and their aliases) and the deployments behind them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hearth.engines.base import Capabilities, Launcher
from hearth.errors import ModelNotFound


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
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def capabilities(self) -> Capabilities:
        return self.launcher.capabilities


class Catalogue:
    def __init__(self) -> None:
        self._deployments: dict[str, LocalDeployment] = {}
        self._names: dict[str, LocalDeployment] = {}  # names and aliases

    def add(self, deployment: LocalDeployment) -> None:
        for name in (deployment.name, *deployment.aliases):
            if name in self._names:
                raise ValueError(f"the model name {name!r} is used twice")
            self._names[name] = deployment
        self._deployments[deployment.name] = deployment

    def resolve(self, name: str) -> LocalDeployment:
        try:
            return self._names[name]
        except KeyError:
            raise ModelNotFound(name, self.names()) from None

    def get(self, name: str) -> LocalDeployment | None:
        """The deployment of that model name (not alias), if any."""
        return self._deployments.get(name)

    def names(self) -> list[str]:
        """Every name a client may use: models and their aliases."""
        return sorted(self._names)

    def deployments(self) -> list[LocalDeployment]:
        return [self._deployments[name] for name in sorted(self._deployments)]
