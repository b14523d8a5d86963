"""The pooled HTTP client to engines and upstreams, and the one place transport errors become
Hearth errors (connection refused, reset mid-answer, timeouts, error statuses).

aiohttp, not httpx: on the gateway's hot path (64 requests in flight against a static upstream)
httpx spent 3.5-4.2 ms of CPU per request in its connection pool, aiohttp 0.27-0.38 ms
(measured on this project's 2-core machine; see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from hearth.errors import (
    APIError,
    UpstreamDisconnected,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

# llama-server (cpp-httplib) closes idle keep-alive connections after 5 s. Reusing one just as
# it closes fails with "Server disconnected", so idle connections are dropped well before that.
KEEPALIVE_EXPIRY_S = 2.0

# Separators of server-sent events; relaying whole events lets a failure append a clean error event.
EVENT_ENDS = (b"\n\n", b"\r\n\r\n")
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Timeouts:
    """Limits of one request, in seconds. `read` bounds the wait for the first byte of the
    answer and every gap between chunks after it; `total` the whole exchange (None: no limit)."""

    read: float | None
    connect: float = 10.0
    total: float | None = None

    def client_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.total, sock_connect=self.connect, sock_read=self.read
        )


@contextlib.contextmanager
def map_transport_errors(what: str) -> Iterator[None]:
    """Translate aiohttp's exceptions into Hearth's, naming what was being talked to."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError:
        raise UpstreamUnavailable(f"{what} did not accept a connection in time") from None
    except TimeoutError:  # aiohttp's read timeouts are TimeoutErrors too
        raise UpstreamTimeout(f"{what} took too long to answer") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamUnavailable(
            f"{what} is not reachable; it may be restarting, retry shortly"
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamDisconnected(
            f"{what} stopped while answering ({type(exc).__name__}); retry the request"
        ) from None


def error_from_response(status: int, body: bytes, retry_after: str | None = None) -> APIError:
    """Relay an upstream error status with the upstream's own message when it gave one."""
    message = body.decode("utf-8", "replace").strip()[:2000] or f"upstream answered HTTP {status}"
    error_type = None
    with contextlib.suppress(ValueError, KeyError, AttributeError, TypeError):
        error = json.loads(body)["error"]
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            error_type = error.get("type")
        elif isinstance(error, str):
            message = error
    return UpstreamStatusError(
        status,
        message,
        error_type if isinstance(error_type, str) else None,
        retry_after=_seconds(retry_after),
    )


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After given in seconds (the HTTP-date form is rare from APIs and is ignored)."""
    if retry_after is None:
        return None
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None


# A pooled connection the server closed while it sat idle fails the next request at once with
# "Server disconnected" or a reset, before any answer: llama-server closes some keep-alive
# connections after a streamed answer without saying so. (httpx checks each pooled socket before
# reuse; aiohttp does not.) Such a request never reached the server, so it is sent again. Only a
# failure that comes at once counts as that: a server that dies while working on the request
# fails later, and that request is not sent twice.
STALE_CONNECTION_RETRIES = 3
STALE_FAILURE_S = 0.5


async def _send(
    request: Callable[[], Awaitable[aiohttp.ClientResponse]],
) -> aiohttp.ClientResponse:
    for attempt in range(STALE_CONNECTION_RETRIES + 1):
        sent = time.monotonic()
        try:
            return await request()
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # Refused is not stale: nothing listens (the caller handles that).
            stale = not isinstance(exc, aiohttp.ClientConnectorError)
            if not stale or attempt == STALE_CONNECTION_RETRIES:
                raise
            if time.monotonic() - sent > STALE_FAILURE_S:
                raise
    raise AssertionError("unreachable")


async def _json_answer(
    request: Callable[[], Awaitable[aiohttp.ClientResponse]], what: str
) -> dict[str, Any]:
    """Send a request and read its whole answer: a JSON object, or a Hearth error."""
    with map_transport_errors(what):
        async with await _send(request) as response:
            content = await response.read()
    if response.status >= 400:
        raise error_from_response(response.status, content, response.headers.get("retry-after"))
    return _decode(content, what)


def _decode(body: bytes, what: str) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        raise UpstreamDisconnected(f"{what} answered with something that is not JSON") from None
    if not isinstance(answer, dict):
        raise UpstreamDisconnected(f"{what} answered with JSON that is not an object")
    return answer


class UpstreamClient:
    """One connection pool for every engine and upstream. Create it inside the event loop."""

    def __init__(self, timeout: float, max_connections: int = 512) -> None:
        self.default_timeouts = Timeouts(read=timeout)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY_S
            ),
            # Engines are on loopback: never route them through a user's HTTP proxy.
            trust_env=False,
            # Bodies are relayed as they are; the client sets its own user agent.
            skip_auto_headers=("User-Agent",),
        )

    async def aclose(self) -> None:
        await self._session.close()

    def _timeout(self, timeouts: Timeouts | None) -> aiohttp.ClientTimeout:
        return (timeouts or self.default_timeouts).client_timeout()

    async def post(
        self,
        url: str,
        body: bytes,
        what: str,
        headers: dict[str, str] | None = None,
        timeouts: Timeouts | None = None,
    ) -> dict[str, Any]:
        """POST a JSON body; return the decoded JSON answer or raise a Hearth error."""
        return await _json_answer(
            lambda: self._session.post(
                url,
                data=body,
                headers={**_JSON, **headers} if headers else _JSON,
                timeout=self._timeout(timeouts),
            ),
            what,
        )

    async def get(
        self,
        url: str,
        what: str,
        headers: dict[str, str] | None = None,
        timeouts: Timeouts | None = None,
    ) -> dict[str, Any]:
        """GET a JSON document (health probes, model lists)."""
        return await _json_answer(
            lambda: self._session.get(url, headers=headers, timeout=self._timeout(timeouts)),
            what,
        )

    @contextlib.asynccontextmanager
    async def open_stream(
        self,
        url: str,
        body: bytes,
        what: str,
        headers: dict[str, str] | None = None,
        timeouts: Timeouts | None = None,
    ) -> AsyncIterator[EventStream]:
        """Start a streamed POST. Errors before the first byte raise here, so callers can still
        answer with a proper HTTP error status; the stream itself is consumed afterwards.
        Leaving early closes the connection, which is what makes an engine stop generating."""
        with map_transport_errors(what):
            response = await _send(
                lambda: self._session.post(
                    url,
                    data=body,
                    headers={**_JSON, **headers} if headers else _JSON,
                    timeout=self._timeout(timeouts),
                )
            )
        try:
            if response.status >= 400:
                with map_transport_errors(what):
                    content = await response.read()
                raise error_from_response(
                    response.status, content, response.headers.get("retry-after")
                )
            yield EventStream(response, what)
        finally:
            if response.content.at_eof():
                response.release()  # read to the end: the connection can be reused
            else:
                response.close()


def _has_end_marker(events: bytes) -> bool:
    # At the start of a line: JSON text can hold "data: [DONE]" but never a raw newline.
    return events.startswith(b"data: [DONE]") or b"\ndata: [DONE]" in events


class EventStream:
    """Server-sent events relayed as they come, whole events at a time."""

    def __init__(self, response: aiohttp.ClientResponse, what: str) -> None:
        self._response = response
        self._what = what
        self.finished = False  # saw the `data: [DONE]` end marker

    async def events(self) -> AsyncIterator[bytes]:
        """Yield complete events (one or more per chunk). Raises UpstreamDisconnected if the
        upstream breaks off or ends without its end marker."""
        pending = b""
        with map_transport_errors(self._what):
            # Decoded bytes: an upstream may compress its stream (Content-Encoding: gzip).
            async for chunk in self._response.content.iter_any():
                pending += chunk
                end = max(
                    pending.rfind(sep) + len(sep) if sep in pending else 0 for sep in EVENT_ENDS
                )
                if end:
                    ready, pending = pending[:end], pending[end:]
                    if _has_end_marker(ready):
                        self.finished = True
                    yield ready
        # What is left lacks its blank line: relayed only if it is the end marker; anything else
        # is an incomplete event, which a client must never see (SSE discards it too).
        if _has_end_marker(pending):
            self.finished = True
            yield pending + b"\n\n"
        if not self.finished:
            raise UpstreamDisconnected(f"{self._what} ended the stream before it was complete")
