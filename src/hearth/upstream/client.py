"""The pooled HTTP client to engines and upstreams, and the one place transport errors become
Hearth errors (connection refused, reset mid-answer, timeouts, error statuses)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from hearth.errors import (
    APIError,
    EngineCrashed,
    EngineTimeout,
    EngineUnavailable,
    UpstreamStatusError,
)

# llama-server (cpp-httplib) closes idle keep-alive connections after 5 s. Reusing one just as
# it closes fails with "Server disconnected without sending a response", so idle connections are
# dropped well before that.
KEEPALIVE_EXPIRY_S = 2.0

# Separators of server-sent events; relaying whole events lets a failure append a clean error event.
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n")


@contextlib.contextmanager
def map_transport_errors(what: str) -> Iterator[None]:
    """Translate httpx's exceptions into Hearth's, naming what was being talked to."""
    try:
        yield
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            raise EngineUnavailable(f"{what} did not accept a connection in time") from None
        raise EngineTimeout(f"{what} took too long to answer") from None
    except httpx.DecodingError:
        raise EngineCrashed(f"{what} sent a response that could not be decoded") from None
    except httpx.ConnectError:
        raise EngineUnavailable(
            f"{what} is not reachable; it may be restarting, retry shortly"
        ) from None
    except httpx.TransportError as exc:
        raise EngineCrashed(
            f"{what} stopped while answering ({type(exc).__name__}); it is being restarted, "
            "retry the request"
        ) from None


def error_from_response(status: int, body: bytes) -> APIError:
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
    return UpstreamStatusError(status, message, error_type if isinstance(error_type, str) else None)


class UpstreamClient:
    def __init__(self, timeout: float, max_connections: int = 512) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=64,
                keepalive_expiry=KEEPALIVE_EXPIRY_S,
            ),
            # Engines are on loopback: never route them through a user's HTTP proxy.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(
        self, url: str, body: bytes, what: str, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """POST a JSON body; return the decoded JSON answer or raise a Hearth error."""
        with map_transport_errors(what):
            response = await self._http.post(
                url, content=body, headers={"content-type": "application/json", **(headers or {})}
            )
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            raise EngineCrashed(f"{what} answered with something that is not JSON") from None
        return answer

    @contextlib.asynccontextmanager
    async def open_stream(
        self, url: str, body: bytes, what: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[EventStream]:
        """Start a streamed POST. Errors before the first byte raise here, so callers can still
        answer with a proper HTTP error status; the stream itself is consumed afterwards."""
        request = self._http.build_request(
            "POST",
            url,
            content=body,
            headers={"content-type": "application/json", **(headers or {})},
        )
        with map_transport_errors(what):
            response = await self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with map_transport_errors(what):
                    content = await response.aread()
                raise error_from_response(response.status_code, content)
            yield EventStream(response, what)
        finally:
            await response.aclose()


def _has_end_marker(events: bytes) -> bool:
    # At the start of a line: JSON text can hold "data: [DONE]" but never a raw newline.
    return events.startswith(b"data: [DONE]") or b"\ndata: [DONE]" in events


class EventStream:
    """Server-sent events relayed as they come, whole events at a time."""

    def __init__(self, response: httpx.Response, what: str) -> None:
        self._response = response
        self._what = what
        self.finished = False  # saw the `data: [DONE]` end marker

    async def events(self) -> AsyncIterator[bytes]:
        """Yield complete events (one or more per chunk). Raises EngineCrashed if the upstream
        breaks off or ends without its end marker."""
        pending = b""
        with map_transport_errors(self._what):
            # Decoded bytes: an upstream may compress its stream (Content-Encoding: gzip).
            async for chunk in self._response.aiter_bytes():
                pending += chunk
                end = max(
                    pending.rfind(sep) + len(sep) if sep in pending else 0 for sep in _EVENT_ENDS
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
            raise EngineCrashed(f"{self._what} ended the stream before it was complete")
