"""The image fetcher against a real image server on loopback: what it fetches, and every way a
request could use it to reach into the network Hearth runs in (refused with a 400 naming why)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from hearth.config import ImageSettings
from hearth.errors import InvalidRequest
from hearth.upstream.images import ImageFetcher, is_public, sniff
from support.ports import free_port
from support.tiny_models import png

RED = png(8, 8, (255, 0, 0))
OPEN = ImageSettings(allow_private=True)  # loopback is the only network here


class ImageServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.hits: dict[str, int] = {}
        self._runner: web.AppRunner | None = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name == "red.png":
            return web.Response(body=RED, content_type="image/png")
        if name == "page":
            return web.Response(text="<html></html>", content_type="text/html")
        if name == "lying":  # says PNG, is HTML
            return web.Response(body=b"<html>not a png</html>", content_type="image/png")
        if name == "missing":
            return web.Response(status=404)
        if name == "slow":
            await asyncio.sleep(5)
            return web.Response(body=RED, content_type="image/png")
        if name == "endless":  # no Content-Length, never ends on its own
            response = web.StreamResponse(headers={"content-type": "image/png"})
            await response.prepare(request)
            await response.write(RED)
            for _ in range(10_000):
                await response.write(b"\0" * 65536)
            return response
        if name == "redirect":
            raise web.HTTPFound(request.query["to"])
        if name == "loop":
            raise web.HTTPFound("/loop")
        return web.Response(status=404)


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    image_server = ImageServer()
    await image_server.start()
    yield image_server
    await image_server.close()


@pytest.fixture
async def fetcher() -> AsyncIterator[ImageFetcher]:
    images = ImageFetcher(OPEN)
    yield images
    await images.aclose()


async def refusal(images: ImageFetcher, url: str) -> str:
    with pytest.raises(InvalidRequest) as caught:
        await images.data_url(url, "messages[0].content[1].image_url.url")
    assert caught.value.param == "messages[0].content[1].image_url.url"
    assert caught.value.status_code == 400
    return caught.value.message


def chat(*urls: str) -> dict[str, Any]:
    parts: list[Any] = [{"type": "text", "text": "What is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": url, "detail": "low"}} for url in urls]
    return {"model": "m", "messages": [{"role": "user", "content": parts}]}


async def test_an_http_image_is_inlined_as_a_data_url(
    server: ImageServer, fetcher: ImageFetcher
) -> None:
    fields = chat(server.url("/red.png"))
    inlined = await fetcher.inline(fields)
    part = inlined["messages"][0]["content"][1]
    assert part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(RED).decode()
    assert part["image_url"]["detail"] == "low"
    assert fields["messages"][0]["content"][1]["image_url"]["url"] == server.url("/red.png")


async def test_a_fetched_image_is_cached(server: ImageServer, fetcher: ImageFetcher) -> None:
    for _ in range(3):
        await fetcher.inline(chat(server.url("/red.png")))
    assert server.hits["red.png"] == 1


async def test_a_request_without_images_is_returned_as_it_is(fetcher: ImageFetcher) -> None:
    fields = {"messages": [{"role": "user", "content": "hi"}]}
    assert await fetcher.inline(fields) is fields


async def test_the_refused_part_is_named(server: ImageServer, fetcher: ImageFetcher) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await fetcher.inline(chat(server.url("/red.png"), server.url("/page")))
    assert caught.value.param == "messages[0].content[2].image_url.url"
    assert "sent text/html, not an image" in caught.value.message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/red.png", "127.0.0.1 is not a public address"),
        ("http://localhost:{port}/red.png", "localhost resolves to 127.0.0.1, which is not"),
        ("http://[::1]:{port}/red.png", "::1 is not a public address"),
        ("http://[::ffff:127.0.0.1]:{port}/red.png", "::ffff:127.0.0.1 is not a public"),
        # Loopback in forms that only the system's resolver decodes, or that aiohttp refuses.
        ("http://0x7f000001:{port}/red.png", "0x7f000001 resolves to 127.0.0.1, which is not"),
        ("http://2130706433:{port}/red.png", "is not a canonical IPv4 address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public address"),
        ("http://10.0.0.1/a.png", "10.0.0.1 is not a public address"),
        ("http://192.168.1.1/a.png", "192.168.1.1 is not a public address"),
        ("http://100.64.0.1/a.png", "100.64.0.1 is not a public address"),  # CGNAT
        ("http://0.0.0.0:{port}/red.png", "0.0.0.0 is not a public address"),
    ],
)
async def test_non_public_addresses_are_refused(server: ImageServer, url: str, reason: str) -> None:
    images = ImageFetcher(ImageSettings())
    try:
        started = time.monotonic()
        message = await refusal(images, url.format(port=server.port))
    finally:
        await images.aclose()
    assert reason in message
    assert time.monotonic() - started < 2  # refused before any connection is tried
    assert server.hits.get("red.png", 0) == 0


async def test_a_redirect_to_a_private_address_is_refused(server: ImageServer) -> None:
    # localhost is allowed (an operator's intranet host), 127.0.0.1 is not: the redirect's target
    # is checked on its own.
    images = ImageFetcher(ImageSettings(allowed_hosts=["localhost"]))
    try:
        assert (await images.data_url(server.url("/red.png", "localhost"), "x")).startswith(
            "data:image/png"
        )
        target = server.url("/red.png")
        message = await refusal(images, server.url(f"/redirect?to={target}", "localhost"))
    finally:
        await images.aclose()
    assert "127.0.0.1 is not a public address" in message
    assert server.hits["red.png"] == 1


async def test_redirects_are_followed_up_to_the_limit(
    server: ImageServer, fetcher: ImageFetcher
) -> None:
    target = server.url("/red.png")
    assert (await fetcher.data_url(server.url(f"/redirect?to={target}"), "x")).startswith("data:")
    assert "more than 3 redirects" in await refusal(fetcher, server.url("/loop"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only http, https and data: URLs"),
        ("gopher://127.0.0.1:70/", "only http, https and data: URLs"),
        ("http://user:secret@127.0.0.1/a.png", "credentials"),
        ("http:///a.png", "no host"),
        ("http://[::1/a.png", "not a valid URL"),
    ],
)
async def test_other_urls_are_refused(fetcher: ImageFetcher, url: str, reason: str) -> None:
    message = await refusal(fetcher, url)
    assert reason in message
    assert "secret" not in message


async def test_what_the_server_sends_must_be_an_image(
    server: ImageServer, fetcher: ImageFetcher
) -> None:
    assert "not an image" in await refusal(fetcher, server.url("/page"))
    assert "not a PNG, JPEG" in await refusal(fetcher, server.url("/lying"))
    assert "answered HTTP 404" in await refusal(fetcher, server.url("/missing"))


async def test_size_and_time_are_limited(server: ImageServer) -> None:
    images = ImageFetcher(ImageSettings(allow_private=True, max_bytes=1024**2, fetch_timeout=0.5))
    try:
        started = time.monotonic()
        assert "larger than 1 MiB" in await refusal(images, server.url("/endless"))
        assert "longer than 0.5 s" in await refusal(images, server.url("/slow"))
        assert time.monotonic() - started < 4
    finally:
        await images.aclose()


async def test_data_urls_are_checked(fetcher: ImageFetcher) -> None:
    encoded = base64.b64encode(RED).decode()
    good = f"data:image/png;base64,{encoded}"
    assert await fetcher.data_url(good, "x") == good
    # The type is what the bytes are, not what the client says.
    assert await fetcher.data_url(f"data:image/jpeg;base64,{encoded}", "x") == good
    assert "not valid base64" in await refusal(fetcher, "data:image/png;base64,@@@")
    assert "must be base64" in await refusal(fetcher, "data:image/png,rawbytes")
    html = base64.b64encode(b"<html></html>").decode()
    assert "not a PNG, JPEG" in await refusal(fetcher, f"data:image/png;base64,{html}")
    small = ImageFetcher(ImageSettings(max_bytes=1000))
    big = base64.b64encode(RED + b"\0" * 2000).decode()
    assert "larger than 1000 bytes" in await refusal(small, f"data:image/png;base64,{big}")


def test_formats_are_sniffed_by_their_first_bytes() -> None:
    assert sniff(RED) == "image/png"
    assert sniff(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff(b"GIF89a...") == "image/gif"
    assert sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert sniff(b"XXXX\0\0\0\0WEBP") is None
    assert sniff(b"%PDF-1.7") is None


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("169.254.169.254", False),
        ("100.64.1.1", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(address) is public
