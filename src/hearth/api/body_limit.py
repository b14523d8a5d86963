"""Request body size limit, checked before anything is read into memory or forwarded."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearth.api.errors import shaped
from hearth.errors import APIError, InvalidRequest, RequestTooLarge


class BodySizeLimit:
    """Refuse bodies over `max_bytes`: at once from Content-Length, or as soon as a chunked body
    grows past the limit. `paths` gives some paths their own limit and the setting behind it
    (audio uploads: `audio.max_bytes`)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, paths: Mapping[str, tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = dict(paths or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.paths.get(scope["path"], (self.max_bytes, "max_request_bytes"))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                error: APIError = InvalidRequest("The Content-Length header is not a number.")
                await _reply(scope, send, error)
                return
            if length > limit:
                await _reply(scope, send, _too_large(length, limit, setting))
                return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(received, limit, setting)
            return message

        await self.app(scope, limited_receive, send)


def _too_large(size: int, limit: int, setting: str) -> RequestTooLarge:
    return RequestTooLarge(
        f"The request body is {size} bytes or more; the limit is {limit} bytes (setting {setting})."
    )


async def _reply(scope: Scope, send: Send, error: APIError) -> None:
    """Answer before the application sees the request, in the error shape of the path's API."""
    body = json.dumps(
        shaped(scope["app"], scope["path"], error.status_code, error.to_body())
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
