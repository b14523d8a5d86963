"""Reaching the running Hearth that the settings describe, for commands like ps, unload and rm."""

from __future__ import annotations

from hearth.config import Settings


def server_url(settings: Settings) -> str:
    """Where a local client reaches `hearth serve`: a wildcard bind address means loopback."""
    host = settings.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def admin_headers(settings: Settings) -> dict[str, str]:
    """The admin key (auth.admin_key) as a header, for commands that call /admin/*."""
    from hearth.errors import ConfigError
    from hearth.secrets import resolve_secret

    if settings.auth.admin_key is None:
        return {}
    try:
        key = resolve_secret(settings.auth.admin_key, "auth.admin_key").reveal()
    except ConfigError:
        return {}
    return {"authorization": f"Bearer {key}"}
