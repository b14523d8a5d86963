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
