"""Reading a routed OpenAI stream (whole `data: ...` events, ending with `data: [DONE]`) as parsed
chunks, for the endpoint families that answer in another wire shape (Ollama, Anthropic)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)


class StreamFailed(Exception):
    """The stream ended with an error event: the answer broke off and must be reported so."""

    def __init__(self, error: object) -> None:
        self.error = error if isinstance(error, dict) else {"message": str(error)}
        self.message = str(self.error.get("message") or "the answer broke off")
        super().__init__(self.message)


async def openai_chunks(events: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of the stream, in order. The stream is read to its end (so the relay
    beneath finishes its accounting); an error event raises `StreamFailed`."""
    failure: StreamFailed | None = None
    async for block in events:
        for line in block.splitlines():
            if not line.startswith(b"data:") or failure is not None:
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                log.warning("skipping an event that is not JSON: %r", data[:200])
                continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk and not chunk.get("choices"):
                failure = StreamFailed(chunk["error"])
                continue
            yield chunk
    if failure is not None:
        raise failure


async def close_events(events: AsyncIterator[bytes]) -> None:
    """Close an event iterator that was not read to its end (the client went away)."""
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()
