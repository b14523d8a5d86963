"""Browser safety as plain ASGI: no web page can drive Hearth. Requests whose `Host` is not one of
this server's names are refused (DNS rebinding), so are requests a page of another origin sends
(CSRF); origins listed in `allowed_origins` get CORS answers instead. Command-line clients and
SDKs send no `Origin` and no `Sec-Fetch-Site`, and pass."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearth.api.errors import api_error_response
from hearth.auth.access import is_loopback
from hearth.config import Settings
from hearth.errors import ConfigError, PermissionDenied

log = logging.getLogger(__name__)

ANY = "*"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_PORTS = {"http": 80, "https": 443}
SAFE_METHODS = ("GET", "HEAD")
# What a configured web app may send and read across origins.
CORS_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_EXPOSED = (
    b"x-request-id, retry-after, x-ratelimit-limit-requests, x-ratelimit-limit-tokens, "
    b"x-ratelimit-remaining-requests, x-ratelimit-remaining-tokens, "
    b"x-ratelimit-reset-requests, x-ratelimit-reset-tokens"
)
CORS_MAX_AGE = b"600"


def split_host(value: str) -> tuple[str, int | None]:
    """A `Host` header (`name`, `name:port`, `[v6]:port`) as (lowercase name, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:  # a bare name, or an IPv6 address without brackets (no port then)
        name, port = value, ""
    return name, int(port) if port.isdigit() else None


def split_origin(value: str) -> tuple[str, str, int] | None:
    """An `Origin` header as (scheme, lowercase host, port), or None if it is not an http(s)
    origin (`null` from sandboxed frames and local files, anything malformed)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _is_origin(text: str) -> bool:
    """scheme://host[:port] and nothing more (a web page's, or a browser extension's)."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc) and not (parts.path or parts.query or parts.fragment)


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


@dataclass(frozen=True)
class BrowserPolicy:
    """Which `Host` names and which foreign origins this server accepts, read once at start."""

    hosts: frozenset[str] | None  # None: any host
    host_suffixes: tuple[str, ...]  # from entries like "*.example.com"
    origins: frozenset[str]
    any_origin: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> BrowserPolicy:
        """Raises ConfigError, naming the key, for an origin that could never match."""
        names = [split_host(entry)[0] for entry in settings.allowed_hosts if entry != ANY]
        hosts: set[str] | None
        if ANY in settings.allowed_hosts or (not is_loopback(settings.host) and not names):
            hosts = None  # keys are required off loopback: any name reaches the server
        else:
            hosts = {*LOOPBACK_NAMES, *(n for n in names if not n.startswith("*."))}
            if not _is_unspecified(settings.host):
                hosts.add(split_host(settings.host)[0])
        origins: set[str] = set()
        for entry in settings.allowed_origins:
            origin = entry.strip().lower().rstrip("/")
            if origin != ANY and not _is_origin(origin):
                raise ConfigError(
                    f"allowed_origins: '{entry}' is not an origin; write it as a browser sends "
                    "it, scheme://host[:port] (e.g. http://localhost:3000), or '*' for any."
                )
            origins.add(origin)
        return cls(
            hosts=None if hosts is None else frozenset(hosts),
            host_suffixes=tuple(n[1:] for n in names if n.startswith("*.")),
            origins=frozenset(origins - {ANY}),
            any_origin=ANY in origins,
        )

    def host_allowed(self, name: str) -> bool:
        return self.hosts is None or name in self.hosts or name.endswith(self.host_suffixes)

    def origin_listed(self, origin: str) -> bool:
        return self.any_origin or origin.lower() in self.origins


class BrowserGuard:
    """Host check, then Origin check (or Sec-Fetch-Site when a browser sends no Origin), then
    CORS for listed origins; everything else passes untouched."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get(b"host")
        name, port = split_host(host) if host is not None else ("", None)
        if host is not None and not self.policy.host_allowed(name):
            await _refuse(
                scope,
                receive,
                send,
                "host_not_allowed",
                f"The Host '{host}' is not a name of this server; a web page may be trying DNS "
                "rebinding. To reach Hearth under this name (a reverse proxy, a container "
                "network), add it to the setting allowed_hosts.",
            )
            return
        origin = headers.get(b"origin")
        if origin is not None:
            if self.policy.origin_listed(origin):
                await self._cors(scope, receive, send, origin, headers)
                return
            if not _same_origin(origin, name, port):
                await _refuse(
                    scope,
                    receive,
                    send,
                    "origin_not_allowed",
                    f"Requests from web pages at {origin} are refused (cross-site). To let a "
                    "web app there use Hearth, add its origin to the setting allowed_origins.",
                )
                return
        elif self._foreign_without_origin(scope["method"], headers):
            await _refuse(
                scope,
                receive,
                send,
                "origin_not_allowed",
                "Cross-site requests from web pages are refused. To let a web app use Hearth, "
                "add its origin to the setting allowed_origins.",
            )
            return
        await self.app(scope, receive, send)

    def _foreign_without_origin(self, method: str, headers: dict[bytes, str]) -> bool:
        """A browser's request from another site that carries no Origin (a no-cors GET such as
        an <img>). Following a link to a page (a GET navigation) stays allowed."""
        site = headers.get(b"sec-fetch-site", "")
        if site not in ("cross-site", "same-site") or self.policy.any_origin:
            return False
        navigation = headers.get(b"sec-fetch-mode") == "navigate"
        return not (navigation and method in SAFE_METHODS)

    async def _cors(
        self, scope: Scope, receive: Receive, send: Send, origin: str, headers: dict[bytes, str]
    ) -> None:
        allow = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"vary", b"Origin"),
        ]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            requested = headers.get(b"access-control-request-headers")
            preflight = [
                *allow,
                (b"access-control-allow-methods", CORS_METHODS),
                (b"access-control-max-age", CORS_MAX_AGE),
                (b"content-length", b"0"),
            ]
            if requested:
                preflight.append((b"access-control-allow-headers", requested.encode("latin-1")))
            await send({"type": "http.response.start", "status": 204, "headers": preflight})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *allow,
                    (b"access-control-expose-headers", CORS_EXPOSED),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _same_origin(origin: str, name: str, port: int | None) -> bool:
    """Whether `origin` is this server as the request addressed it (its Host header). The scheme
    is not compared: behind a TLS proxy Hearth sees http for an https page."""
    parts = split_origin(origin)
    if parts is None or not name:
        return False
    scheme, origin_name, origin_port = parts
    return origin_name == name and origin_port == (port or DEFAULT_PORTS[scheme])


async def _refuse(scope: Scope, receive: Receive, send: Send, code: str, message: str) -> None:
    log.warning("refused %s %s: %s", scope["method"], scope["path"], message)
    response = await api_error_response(Request(scope), PermissionDenied(message, code=code))
    await response(scope, receive, send)
