"""Authentication as plain ASGI: the caller's key from `Authorization: Bearer` or `x-api-key`
(Anthropic clients), resolved from the in-memory cache; `/admin/*` only with the admin key.

While no key exists and no admin key is set (and so only on a loopback address, see
`Access.check_exposure`), requests pass untouched. Scopes, limits and budgets are checked per
model by the pipeline's admit step (`hearth.pipeline.admit`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearth.api.errors import api_error_response
from hearth.auth.service import KeyService
from hearth.errors import APIError, PermissionDenied

# Reachable without a key: probes, metrics, API docs and the dashboard's static files.
OPEN_PATHS = frozenset(
    {
        "/health",
        "/ready",
        "/metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
        "/ui",
        "/favicon.ico",
    }
)
OPEN_PREFIXES = ("/ui/",)
# Ollama's model-management endpoints change the server for everyone: admin only.
ADMIN_ONLY = frozenset({"/api/pull", "/api/delete", "/api/copy", "/api/create", "/api/push"})
# Admin actions written to the audit log when they succeed (key changes log themselves).
AUDITED = {
    "/api/pull": "model.pull",
    "/api/delete": "model.remove",
    "/api/copy": "model.copy",
    "/api/create": "model.create",
    "/admin/reload": "settings.reload",
}


def presented_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value:
            key: str = value.decode("latin-1").strip()
            return key
    return None


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/") or path in ADMIN_ONLY


def audited_action(method: str, path: str) -> str | None:
    if method in ("GET", "HEAD", "OPTIONS") or not is_admin_path(path):
        return None
    if path.startswith("/admin/keys"):
        return None
    if path.startswith("/admin/models/") and path.endswith("/unload"):
        return "model.unload"
    return AUDITED.get(path, f"admin.{method.lower()}")


class AuthGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        keys: KeyService | None = getattr(services, "keys", None)
        access = None if keys is None else keys.access
        path = scope["path"]
        action = audited_action(scope["method"], path)
        if action is not None and keys is not None:
            actor = "admin-api" if access is not None and access.enforced else "open (no auth)"
            send = _audit_on_success(send, keys, actor, action, path)
        if (
            access is None
            or not access.enforced
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        try:
            key, admin = access.authenticate(presented_key(scope))
            if is_admin_path(path) and not admin:
                if access.admin_hash is None:
                    raise PermissionDenied(
                        "No admin key is configured: set auth.admin_key (env:NAME or file:PATH) "
                        "to use the admin endpoints."
                    )
                raise PermissionDenied(
                    "API keys for inference cannot use the admin endpoints; use the admin key."
                )
        except APIError as exc:
            reason = "scope" if isinstance(exc, PermissionDenied) else "key"
            scope["app"].state.metrics.rejections.labels(reason).inc()
            response = await api_error_response(Request(scope), exc)
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["key"], state["admin"] = key, admin
        await self.app(scope, receive, send)


def _audit_on_success(send: Send, keys: KeyService, actor: str, action: str, path: str) -> Send:
    """`send`, noting the admin action in the audit log (off the request path) once it has
    answered with a success status."""

    async def watched(message: Message) -> None:
        if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
            keys.audit_soon(actor, action, path)
        await send(message)

    return watched
