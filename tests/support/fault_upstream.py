"""A fault-injecting HTTP upstream on loopback: a raw asyncio server, so tests control every byte.

The path picks the behaviour (one request per connection); `/<behaviour>/v1/...` behaves as
`/<behaviour>`, so `url("/hangup/v1")` can be a deployment's URL:

    POST /ok                      200 JSON
    POST /not-json                200 with a body that is not JSON
    POST /truncated               200 that promises more body than it sends, then closes
    POST /hangup                  reads the request, closes without answering
    POST /slow?delay=S            waits S seconds before answering 200 JSON
    POST /error?status=N&body=K   error status; K: a key of ERROR_BODIES
    POST /stream?...              server-sent events, see `_stream`

Streams send `events` (default 3) chunk events, then end as `end` says:

    done        `data: [DONE]`, then the chunked body's proper end
    done-bare   `data: [DONE]` without its blank line, then the proper end
    clean       the proper end of the body, without [DONE]
    eof         no chunked framing: the body ends when the connection closes (no [DONE])
    cut         half an event, then the connection closes before the body's proper end
    cut-eof     `eof` framing: half an event, then the connection closes
    reset       waits for `release`, then resets the connection (RST)
    stall       never sends anything more

Other stream options: `hold=1` sends the first event and half of the second, then waits for
`release` before the rest; `split=N` writes the body N bytes at a time; `crlf=1` ends events with
CRLF CRLF; `gzip=1` compresses the body (Content-Encoding: gzip); `fake_done=1` puts the text
"data: [DONE]" inside an event's JSON. `client_left` is set when a client closes its end of a
stream that is still open. `connections` counts the connections accepted, `requests` the
requests read. `in_thread()` runs one on a loop of its own, for a Hearth subprocess to reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

ERROR_BODIES = {
    "json": b'{"error": {"code": 400, "message": "the prompt is too long for the context",'
    b' "type": "invalid_request_error"}}',
    "server": b'{"error": {"code": 500, "message": "failed to decode the batch",'
    b' "type": "server_error"}}',
    "loading": b'{"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}',
    "text": b"upstream exploded\n",
    "empty": b"",
    "detail": b'{"detail": "Not Found"}',
    "string": b'{"error": "model is loading"}',
}


def chunk_event(i: int, sep: bytes = b"\n\n", content: str | None = None) -> bytes:
    delta = {"content": content if content is not None else f"tok{i}"}
    chunk = {"id": "cmpl-1", "object": "chat.completion.chunk", "choices": [{"delta": delta}]}
    return b"data: " + json.dumps(chunk).encode() + sep


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FaultUpstream:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.connections = 0
        self.release = asyncio.Event()  # lets a held or reset-pending stream go on
        self.client_left = asyncio.Event()  # a client closed its end while a stream was open
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = await self._read_request(reader)
            self.requests.append(request)
            url = urlsplit(request.path)
            options = {k: v[-1] for k, v in parse_qs(url.query).items()}
            path = url.path.split("/v1/", 1)[0] or url.path  # /hangup/v1/chat/completions
            if path == "/stream":
                watch = asyncio.create_task(self._watch_client(reader))
                try:
                    await self._stream(options, writer)
                finally:
                    watch.cancel()
            else:
                await self._answer(path, options, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _watch_client(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            if await reader.read(1) == b"":
                self.client_left.set()

    async def _read_request(self, reader: asyncio.StreamReader) -> Received:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Received(method, path, headers, body)

    async def _answer(
        self, path: str, options: dict[str, str], writer: asyncio.StreamWriter
    ) -> None:
        if path == "/ok":
            await self._send(writer, 200, b'{"object": "chat.completion", "choices": []}')
        elif path == "/not-json":
            await self._send(writer, 200, b"<html>surprise</html>", "text/html")
        elif path == "/truncated":
            writer.write(self._head(200, {"content-length": "100"}) + b'{"object": "chat.')
            await writer.drain()
        elif path == "/hangup":
            pass
        elif path == "/slow":
            await asyncio.sleep(float(options.get("delay", "30")))
            await self._send(writer, 200, b'{"object": "chat.completion"}')
        elif path == "/error":
            body = ERROR_BODIES[options.get("body", "json")]
            content_type = "text/plain" if options.get("body") == "text" else "application/json"
            await self._send(writer, int(options.get("status", "400")), body, content_type)
        else:
            await self._send(writer, 404, b'{"error": {"message": "no such path"}}')

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "application/json",
    ) -> None:
        headers = {
            "content-type": content_type,
            "content-length": str(len(body)),
            "connection": "close",
        }
        writer.write(self._head(status, headers) + body)
        await writer.drain()

    async def _stream(self, options: dict[str, str], writer: asyncio.StreamWriter) -> None:
        end = options.get("end", "done")
        chunked = end not in ("eof", "cut-eof")
        sep = b"\r\n\r\n" if options.get("crlf") == "1" else b"\n\n"
        events = [chunk_event(i, sep) for i in range(int(options.get("events", "3")))]
        if options.get("fake_done") == "1":
            events.append(chunk_event(len(events), sep, content="data: [DONE]"))
        tail = {
            "done": b"data: [DONE]" + sep,
            "done-bare": b"data: [DONE]",
            "cut": chunk_event(99)[:25],
            "cut-eof": chunk_event(99)[:25],
        }.get(end, b"")
        compressor = zlib.compressobj(wbits=31) if options.get("gzip") == "1" else None

        headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        headers["transfer-encoding" if chunked else "connection"] = (
            "chunked" if chunked else "close"
        )
        if compressor:
            headers["content-encoding"] = "gzip"
        writer.write(self._head(200, headers))

        async def send(data: bytes) -> None:
            if data:
                writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            await writer.drain()

        async def write(data: bytes) -> None:
            if compressor:
                data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            await send(data)

        body = b"".join(events) + tail
        if options.get("hold") == "1":
            first_cut = len(events[0]) + len(events[1]) // 2
            await write(body[:first_cut])
            await self.release.wait()
            body = body[first_cut:]
        step = int(options.get("split", "0")) or len(body) or 1
        for start in range(0, len(body), step):
            await write(body[start : start + step])
            if step < len(body):
                await asyncio.sleep(0.002)

        if end == "stall":
            await asyncio.sleep(3600)
        elif end == "reset":
            await self.release.wait()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif end in ("done", "done-bare", "clean"):
            if compressor:
                await send(compressor.flush())
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        # eof, cut, cut-eof: the connection just closes


@contextlib.contextmanager
def in_thread() -> Iterator[FaultUpstream]:
    """A FaultUpstream serving from a thread with its own event loop, until the block ends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = FaultUpstream()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
