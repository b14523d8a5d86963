"""What a caller may see: a key limited to some models sees, lists, shows and is told about only
those, on every protocol (listings, show, ps, and the names an "unknown model" error offers)."""

from __future__ import annotations

from starlette.requests import Request

from hearth.auth.keys import KeyRecord
from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import Route
from hearth.errors import ModelNotFound


def caller(request: Request) -> KeyRecord | None:
    """The key that authenticated the request (None: keys are off, or the admin key)."""
    key: KeyRecord | None = getattr(request.state, "key", None)
    return key


def may_see(request: Request, name: str, route: Route | None = None) -> bool:
    """Whether the caller may know of the model `name` (by that name or its route's)."""
    key = caller(request)
    if key is None:
        return True
    return key.allows_model(name) if route is None else key.allows_model(name, route.name)


def visible_names(request: Request, catalogue: Catalogue) -> list[str]:
    key = caller(request)
    return catalogue.names_visible(None if key is None else key.allows_model)


def resolve_visible(request: Request, catalogue: Catalogue, name: str) -> Route:
    """The route of `name`; ModelNotFound (offering only what the caller may see) if there is
    none or the caller may not see it, so a key learns nothing of models beyond its scope."""
    try:
        route = catalogue.resolve(name)
    except ModelNotFound:
        raise ModelNotFound(name, visible_names(request, catalogue)) from None
    if not may_see(request, name, route):
        raise ModelNotFound(name, visible_names(request, catalogue))
    return route
