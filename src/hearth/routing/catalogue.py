"""The model catalogue: public model names and the deployments that serve them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hearth.engines.base import Capabilities
from hearth.engines.supervisor import EngineSupervisor
from hearth.errors import ModelNotFound


@dataclass
class LocalDeployment:
    """A model served by an engine process that Hearth owns."""

    name: str
    supervisor: EngineSupervisor
    capabilities: Capabilities
    created: int = field(default_factory=lambda: int(time.time()))

    async def base_url(self) -> str:
        return await self.supervisor.endpoint()


class Catalogue:
    def __init__(self) -> None:
        self._deployments: dict[str, LocalDeployment] = {}

    def add(self, deployment: LocalDeployment) -> None:
        if deployment.name in self._deployments:
            raise ValueError(f"model {deployment.name!r} is already in the catalogue")
        self._deployments[deployment.name] = deployment

    def resolve(self, name: str) -> LocalDeployment:
        try:
            return self._deployments[name]
        except KeyError:
            raise ModelNotFound(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._deployments)

    def deployments(self) -> list[LocalDeployment]:
        return [self._deployments[name] for name in self.names()]
