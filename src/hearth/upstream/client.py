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
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

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
# reuse; aiohttp does not.) Such a request never reached the server, so it is sent once more, on
# a new connection. Only that race counts: the failed connection came from the pool and failed
# at once. A new connection that fails (a server that drops every connection) or a server that
# dies while working on the request is not sent it again here; retries are the router's.
STALE_FAILURE_S = 0.5

# Send = a function that sends the request on the given session.
Send = Callable[[aiohttp.ClientSession], Awaitable[aiohttp.ClientResponse]]


class _Attempt:
    """One send: whether its connection was taken from the pool (set by `_PoolConnector`)."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("hearth_upstream_attempt", default=None)


class _PoolConnector(aiohttp.TCPConnector):
    """A TCPConnector that tells the send in progress (through `_ATTEMPT`, in the same task)
    whether the connection it got was used before, that is, sat idle in the pool."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._used: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        reused = protocol in self._used
        if not reused and protocol is not None:
            self._used.add(protocol)
        attempt = _ATTEMPT.get()
        if attempt is not None:
            attempt.reused = reused  # the last connection counts (aiohttp may retry a GET)
        return connection


async def _send(
    send: Send, session: aiohttp.ClientSession, fresh: aiohttp.ClientSession
) -> aiohttp.ClientResponse:
    """`send` on the pooled `session`; once more on `fresh` (new connections only) if it met
    a pooled connection the server had closed."""
    attempt = _Attempt()
    token = _ATTEMPT.set(attempt)
    sent = time.monotonic()
    try:
        return await send(session)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        # Refused is not stale: nothing listens (the caller handles that).
        refused = isinstance(exc, aiohttp.ClientConnectorError)
        if refused or not attempt.reused or time.monotonic() - sent > STALE_FAILURE_S:
            raise
    finally:
        _ATTEMPT.reset(token)
    return await send(fresh)


async def _json_answer(
    send: Send, session: aiohttp.ClientSession, fresh: aiohttp.ClientSession, what: str
) -> dict[str, Any]:
    """Send a request and read its whole answer: a JSON object, or a Hearth error."""
    with map_transport_errors(what):
        async with await _send(send, session, fresh) as response:
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


@dataclass(frozen=True)
class Form:
    """A multipart/form-data body: text fields and one file (a speech upload, upstream/speech.py),
    sent where a JSON body would be. Built anew for each send: aiohttp's FormData is single-use."""

    fields: tuple[tuple[str, str], ...]
    file_field: str
    filename: str
    content: bytes
    content_type: str

    def form_data(self) -> aiohttp.FormData:
        data = aiohttp.FormData(quote_fields=False)
        for name, value in self.fields:
            data.add_field(name, value)
        data.add_field(
            self.file_field, self.content, filename=self.filename, content_type=self.content_type
        )
        return data


class UpstreamClient:
    """One connection pool for every engine and upstream. Create it inside the event loop."""

    def __init__(self, timeout: float, max_connections: int = 512) -> None:
        self.default_timeouts = Timeouts(read=timeout)
        self._session = _new_session(
            _PoolConnector(
                limit=max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY_S
            )
        )
        # For the one resend after a stale pooled connection: a new connection, closed after.
        self._fresh = _new_session(aiohttp.TCPConnector(limit=0, force_close=True))

    async def aclose(self) -> None:
        await self._session.close()
        await self._fresh.close()

    def _timeout(self, timeouts: Timeouts | None) -> aiohttp.ClientTimeout:
        return (timeouts or self.default_timeouts).client_timeout()

    async def post(
        self,
        url: str,
        body: bytes | Form,
        what: str,
        headers: dict[str, str] | None = None,
        timeouts: Timeouts | None = None,
    ) -> dict[str, Any]:
        """POST a JSON body (or a multipart `Form`); return the decoded JSON answer or raise a
        Hearth error."""
        if isinstance(body, Form):  # aiohttp sets the multipart content type and boundary
            form = body
            return await _json_answer(
                lambda session: session.post(
                    url,
                    data=form.form_data(),
                    headers=headers,
                    timeout=self._timeout(timeouts),
                ),
                self._session,
                self._fresh,
                what,
            )
        return await _json_answer(
            lambda session: session.post(
                url,
                data=body,
                headers={**_JSON, **headers} if headers else _JSON,
                timeout=self._timeout(timeouts),
            ),
            self._session,
            self._fresh,
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
            lambda session: session.get(url, headers=headers, timeout=self._timeout(timeouts)),
            self._session,
            self._fresh,
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
                lambda session: session.post(
                    url,
                    data=body,
                    headers={**_JSON, **headers} if headers else _JSON,
                    timeout=self._timeout(timeouts),
                ),
                self._session,
                self._fresh,
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


def _new_session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        # Engines are on loopback: never route them through a user's HTTP proxy.
        trust_env=False,
        # Bodies are relayed as they are; the client sets its own user agent.
        skip_auto_headers=("User-Agent",),
    )


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
