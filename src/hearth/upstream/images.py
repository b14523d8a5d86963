"""Images a chat request names by URL, fetched by Hearth and handed to the engine inline.

Local engines (llama-server) take an image only as a `data:` URL, so an `image_url` part with an
http(s) URL is fetched here, the one place Hearth fetches anything a request names. That makes
this module the door a stranger's request could use to reach into the network Hearth runs in, so
every fetch is held to:

- http and https only, and an address that is public: loopback, private, link-local, shared,
  reserved and multicast addresses are refused (unless `images.allow_private`, or the host is in
  `images.allowed_hosts`). Names are checked where they are resolved, inside the connection
  (a resolver that refuses such addresses), so a name that resolves differently on the second
  lookup cannot slip through; literal addresses are checked before connecting.
- redirects followed by hand, each new URL checked the same way, at most `images.max_redirects`;
- `images.fetch_timeout` for the whole fetch, redirects included; `images.max_bytes` for the
  body, enforced while reading (a lying Content-Length does not help);
- a Content-Type of image/*, and bytes that start like an image format engines read (PNG, JPEG,
  GIF, WebP, BMP): the data URL carries the sniffed type, never the server's word for it.

`data:` URLs are held to the same size limit and format check. Fetched images are kept in a
small LRU cache (by URL, for a few minutes), since agents send the same image turn after turn.
Every refusal is a 400 naming the message part and the reason, in the API's own error shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from hearth.config import ImageSettings
from hearth.errors import InvalidRequest

# How each format engines read starts (offset, bytes), and its media type.
_SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("image/png", 0, b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", 0, b"\xff\xd8\xff"),
    ("image/gif", 0, b"GIF87a"),
    ("image/gif", 0, b"GIF89a"),
    ("image/webp", 8, b"WEBP"),
    ("image/bmp", 0, b"BM"),
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
CACHE_SECONDS = 300.0
MAX_PARALLEL_FETCHES = 4


def sniff(data: bytes) -> str | None:
    """The image format `data` is in, by its first bytes; None if none an engine reads."""
    for media_type, offset, signature in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            if media_type == "image/webp" and not data.startswith(b"RIFF"):
                continue
            return media_type
    return None


def is_public(address: str) -> bool:
    """Whether an IP address is one anyone on the internet could reach: not loopback, private,
    link-local, shared (CGNAT), reserved, unspecified or multicast (an IPv4-mapped IPv6 address
    is judged as the IPv4 address it maps)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _Refused(Exception):
    """Why an image was not fetched, said to the client (a 400 naming the part)."""


class _PublicOnlyResolver(AbstractResolver):
    """Resolves as usual, then refuses a name with any non-public address: checked at
    connection time, on the addresses actually connected to."""

    def __init__(self, settings: ImageSettings) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._settings = settings

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if _may_be_private(self._settings, host):
            return results
        for result in results:
            if not is_public(result["host"]):
                raise _Refused(
                    f"{host} resolves to {result['host']}, which is not a public address"
                )
        return results

    async def close(self) -> None:
        await self._inner.close()


def _may_be_private(settings: ImageSettings, host: str) -> bool:
    return settings.allow_private or host.lower().rstrip(".") in {
        h.lower().rstrip(".") for h in settings.allowed_hosts
    }


@dataclass
class ImageFetcher:
    settings: ImageSettings
    _session: aiohttp.ClientSession | None = None
    _cache: OrderedDict[str, tuple[float, str, bytes]] = field(default_factory=OrderedDict)
    _cached_bytes: int = 0

    async def inline(self, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields` (an OpenAI chat request) with every http(s) image URL replaced by a data: URL
        of the fetched image, and every data: URL checked. The request is not changed; messages
        with images are copied. InvalidRequest names the first part refused."""
        messages = fields.get("messages")
        if not isinstance(messages, list):
            return fields
        jobs: list[tuple[int, int, str]] = []
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                continue
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    url = (part.get("image_url") or {}).get("url")
                    jobs.append((i, j, url if isinstance(url, str) else ""))
        if not jobs:
            return fields
        limit = asyncio.Semaphore(MAX_PARALLEL_FETCHES)

        async def one(i: int, j: int, url: str) -> str:
            async with limit:
                return await self.data_url(url, f"messages[{i}].content[{j}].image_url.url")

        urls = await _gather([one(*job) for job in jobs])
        copied = list(messages)
        for (i, j, _), data_url in zip(jobs, urls, strict=True):
            if copied[i] is messages[i]:
                copied[i] = {**messages[i], "content": list(messages[i]["content"])}
            part = copied[i]["content"][j]
            copied[i]["content"][j] = {**part, "image_url": {**part["image_url"], "url": data_url}}
        return {**fields, "messages": copied}

    async def data_url(self, url: str, where: str) -> str:
        """The image at `url` (http, https or data) as a checked data: URL."""
        try:
            if url.startswith("data:"):
                return self._checked_data_url(url)
            media_type, data = await self._fetch(url)
        except _Refused as exc:
            raise InvalidRequest(f"Invalid image in '{where}': {exc}", param=where) from None
        return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _checked_data_url(self, url: str) -> str:
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise _Refused("a data: URL must be base64, as data:image/png;base64,<data>")
        limit = int(self.settings.max_bytes)
        if len(payload) > (limit + 2) // 3 * 4 + 4:  # before decoding: the encoded size says
            raise _Refused(f"the image is larger than {_size(limit)} (setting: images.max_bytes)")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _Refused("the data: URL is not valid base64") from None
        media_type = sniff(data)
        if media_type is None:
            raise _Refused("the data is not a PNG, JPEG, GIF, WebP or BMP image")
        if header == f"data:{media_type};base64":
            return url
        return f"data:{media_type};base64,{payload}"

    async def _fetch(self, url: str) -> tuple[str, bytes]:
        cached = self._cache.get(url)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            self._cache.move_to_end(url)
            return cached[1], cached[2]
        try:
            async with asyncio.timeout(self.settings.fetch_timeout):
                media_type, data = await self._follow(url)
        except TimeoutError:
            raise _Refused(
                f"fetching it took longer than {self.settings.fetch_timeout:g} s "
                "(setting: images.fetch_timeout)"
            ) from None
        except aiohttp.ClientError as exc:
            raise _Refused(f"it could not be fetched ({type(exc).__name__}: {exc})") from None
        except OSError as exc:
            raise _Refused(f"it could not be fetched ({exc.strerror or exc})") from None
        self._remember(url, media_type, data)
        return media_type, data

    async def _follow(self, url: str) -> tuple[str, bytes]:
        session = self._client()
        for _ in range(self.settings.max_redirects + 1):
            self._check_url(url)
            async with session.get(url, allow_redirects=False) as response:
                if response.status in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise _Refused(f"{_origin(url)} redirected without a Location")
                    url = urljoin(url, location)
                    continue
                if response.status != 200:
                    raise _Refused(f"{_origin(url)} answered HTTP {response.status}")
                return await self._read(response)
        raise _Refused(
            f"more than {self.settings.max_redirects} redirects (setting: images.max_redirects)"
        )

    def _check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise _Refused("not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise _Refused(f"only http, https and data: URLs are fetched, not {parts.scheme!r}")
        if not host:
            raise _Refused("the URL has no host")
        if parts.username or parts.password:
            raise _Refused("URLs with credentials are not fetched")
        try:
            literal = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: the resolver checks its addresses
        if not _may_be_private(self.settings, host) and not is_public(str(literal)):
            raise _Refused(f"{host} is not a public address (setting: images.allow_private)")

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[str, bytes]:
        declared = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not declared.startswith("image/"):
            raise _Refused(
                f"{_origin(str(response.url))} sent {declared or 'no type'}, not an image"
            )
        limit = int(self.settings.max_bytes)
        too_large = f"the image is larger than {_size(limit)} (setting: images.max_bytes)"
        if (response.content_length or 0) > limit:
            raise _Refused(too_large)
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise _Refused(too_large)
        media_type = sniff(bytes(body[:16]))
        if media_type is None:
            raise _Refused("the data is not a PNG, JPEG, GIF, WebP or BMP image")
        return media_type, bytes(body)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=_PublicOnlyResolver(self.settings), limit=16, ttl_dns_cache=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.settings.fetch_timeout),
                headers={"user-agent": "Hearth image fetcher", "accept": "image/*"},
                trust_env=False,  # never through a proxy the environment names
            )
        return self._session

    def _remember(self, url: str, media_type: str, data: bytes) -> None:
        if len(data) > int(self.settings.cache_bytes) or self.settings.cache_entries == 0:
            return
        replaced = self._cache.pop(url, None)
        if replaced is not None:
            self._cached_bytes -= len(replaced[2])
        self._cache[url] = (time.monotonic(), media_type, data)
        self._cached_bytes += len(data)
        while len(self._cache) > self.settings.cache_entries or self._cached_bytes > int(
            self.settings.cache_bytes
        ):
            _, (_, _, dropped) = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped)


async def _gather(jobs: list[Awaitable[str]]) -> list[str]:
    """All results, or the first failure with the rest cancelled."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _size(n: int) -> str:
    return f"{n / 1024**2:g} MiB" if n >= 1024**2 else f"{n} bytes"
