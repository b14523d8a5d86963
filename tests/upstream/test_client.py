"""UpstreamClient against a fault-injecting upstream: errors become Hearth errors, streams are
relayed whole events at a time, and a stream that breaks off never passes for a complete one."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from hearth.engines.ports import free_port
from hearth.errors import (
    UpstreamDisconnected,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from hearth.upstream.client import EventStream, UpstreamClient, map_transport_errors
from support.fault_upstream import chunk_event

WHAT = "the engine for model 'tiny'"
BODY = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": true}'
DONE = b"data: [DONE]\n\n"


def events(n: int, sep: bytes = b"\n\n") -> bytes:
    return b"".join(chunk_event(i, sep) for i in range(n))


async def relay(stream: EventStream, into: list[bytes]) -> None:
    async for item in stream.events():
        into.append(item)


def assert_whole_events(items: list[bytes], sep: bytes = b"\n\n") -> None:
    """Every relayed piece starts an event and ends one: nothing is cut in the middle."""
    for item in items:
        assert item.startswith(b"data: "), item
        assert item.endswith(sep), item


# --- non-streamed requests -------------------------------------------------------------------


async def test_post_sends_the_body_and_returns_the_json_answer(upstream, client):
    answer = await client.post(upstream.url("/ok"), BODY, WHAT)

    assert answer == {"object": "chat.completion", "choices": []}
    [request] = upstream.requests
    assert (request.method, request.path, request.body) == ("POST", "/ok", BODY)
    assert request.headers["content-type"] == "application/json"


ERROR_CASES = [
    # status, body kind, relayed message, relayed error type
    (400, "json", "the prompt is too long for the context", "invalid_request_error"),
    (500, "server", "failed to decode the batch", "server_error"),
    (503, "loading", "Loading model", "unavailable_error"),
    (500, "text", "upstream exploded", "server_error"),
    (503, "empty", "upstream answered HTTP 503", "server_error"),
    (503, "string", "model is loading", "server_error"),
    (404, "detail", '{"detail": "Not Found"}', "invalid_request_error"),
]


@pytest.mark.parametrize(("status", "body", "message", "error_type"), ERROR_CASES)
async def test_post_relays_an_error_status_with_the_upstreams_message(
    upstream, client, status, body, message, error_type
):
    with pytest.raises(UpstreamStatusError) as raised:
        await client.post(upstream.url(f"/error?status={status}&body={body}"), BODY, WHAT)

    assert raised.value.status_code == status
    assert raised.value.to_body()["error"] == {
        "message": message,
        "type": error_type,
        "param": None,
        "code": None,
    }


async def test_post_answer_that_is_not_json_is_an_engine_error(upstream, client):
    with pytest.raises(UpstreamDisconnected, match="answered with something that is not JSON"):
        await client.post(upstream.url("/not-json"), BODY, WHAT)


@pytest.mark.parametrize("path", ["/truncated", "/hangup"])
async def test_post_broken_off_by_the_upstream_raises_upstream_disconnected(upstream, client, path):
    with pytest.raises(UpstreamDisconnected) as raised:
        await client.post(upstream.url(path), BODY, WHAT)
    assert raised.value.status_code == 502
    assert raised.value.message.startswith(f"{WHAT} stopped while answering")
    # A new connection that breaks is not a stale pooled one: sent once (retries are the router's).
    assert (upstream.connections, len(upstream.requests)) == (1, 1)


async def test_post_to_a_closed_port_raises_upstream_unavailable(client):
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    with pytest.raises(UpstreamUnavailable) as raised:
        await client.post(url, BODY, WHAT)
    assert raised.value.status_code == 503
    assert raised.value.message.startswith(f"{WHAT} is not reachable")


async def test_post_slower_than_the_timeout_raises_upstream_timeout(upstream):
    impatient = UpstreamClient(timeout=0.3)
    try:
        with pytest.raises(UpstreamTimeout) as raised:
            await impatient.post(upstream.url("/slow?delay=30"), BODY, WHAT)
    finally:
        await impatient.aclose()
    assert raised.value.status_code == 504
    assert raised.value.message == f"{WHAT} took too long to answer"


async def test_the_client_ignores_proxy_settings(upstream, monkeypatch):
    # Engines are on loopback; a user's proxy (here: one that does not exist) must not be used.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxied = UpstreamClient(timeout=10.0)
    try:
        assert await proxied.post(upstream.url("/ok"), BODY, WHAT) == {
            "object": "chat.completion",
            "choices": [],
        }
    finally:
        await proxied.aclose()


def _refused() -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))


@pytest.mark.parametrize(
    ("raised", "mapped", "message"),
    [
        (aiohttp.ConnectionTimeoutError("t"), UpstreamUnavailable, "did not accept a connection"),
        (aiohttp.SocketTimeoutError("t"), UpstreamTimeout, "took too long to answer"),
        (TimeoutError(), UpstreamTimeout, "took too long to answer"),
        (_refused(), UpstreamUnavailable, "is not reachable"),
        (aiohttp.ServerDisconnectedError(), UpstreamDisconnected, "(ServerDisconnectedError)"),
        (aiohttp.ClientPayloadError("p"), UpstreamDisconnected, "(ClientPayloadError)"),
        (aiohttp.ClientOSError(104, "reset"), UpstreamDisconnected, "(ClientOSError)"),
    ],
)
def test_transport_errors_map_to_hearth_errors(raised, mapped, message):
    with pytest.raises(mapped) as caught, map_transport_errors(WHAT):
        raise raised
    assert type(caught.value) is mapped
    assert caught.value.message.startswith(WHAT)
    assert message in caught.value.message


def test_other_errors_pass_through_unmapped():
    with pytest.raises(KeyError), map_transport_errors(WHAT):
        raise KeyError("not a transport error")


# --- streams --------------------------------------------------------------------------------


async def test_stream_relays_events_and_ends_at_done(upstream, client):
    got: list[bytes] = []
    async with client.open_stream(upstream.url("/stream?events=3"), BODY, WHAT) as stream:
        await relay(stream, got)
        assert stream.finished

    assert b"".join(got) == events(3) + DONE
    assert_whole_events(got)
    [request] = upstream.requests
    assert request.body == BODY
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
@pytest.mark.parametrize("split", [1, 7, 150])
async def test_events_split_across_writes_are_relayed_whole(upstream, client, split, crlf):
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    url = upstream.url(f"/stream?events=4&split={split}&crlf={int(crlf)}")
    got: list[bytes] = []
    async with client.open_stream(url, BODY, WHAT) as stream:
        await relay(stream, got)
        assert stream.finished

    assert b"".join(got) == events(4, sep) + b"data: [DONE]" + sep
    assert_whole_events(got, sep)


async def test_each_event_is_relayed_as_it_comes_and_a_half_one_is_held_back(upstream, client):
    # The upstream sends event 0 and half of event 1, then waits until the test has event 0.
    async with client.open_stream(upstream.url("/stream?events=3&hold=1"), BODY, WHAT) as stream:
        relayed = stream.events()
        first = await asyncio.wait_for(anext(relayed), 10)
        assert first == chunk_event(0)
        assert not stream.finished

        upstream.release.set()
        rest = [item async for item in relayed]
        assert stream.finished

    assert b"".join([first, *rest]) == events(3) + DONE
    assert_whole_events(rest)


async def test_done_without_its_blank_line_still_ends_the_stream(upstream, client):
    got: list[bytes] = []
    async with client.open_stream(upstream.url("/stream?end=done-bare"), BODY, WHAT) as stream:
        await relay(stream, got)
        assert stream.finished
    assert b"".join(got) == events(3) + DONE


@pytest.mark.parametrize("end", ["cut", "cut-eof"])
async def test_a_stream_broken_mid_event_relays_only_whole_events(upstream, client, end):
    got: list[bytes] = []
    async with client.open_stream(upstream.url(f"/stream?end={end}"), BODY, WHAT) as stream:
        with pytest.raises(UpstreamDisconnected) as raised:
            await relay(stream, got)
        assert not stream.finished

    assert b"".join(got) == events(3)  # the half event that followed was not relayed
    assert_whole_events(got)
    assert raised.value.message.startswith(WHAT)


@pytest.mark.parametrize("end", ["clean", "eof"])
async def test_a_stream_that_ends_without_done_raises_upstream_disconnected(upstream, client, end):
    got: list[bytes] = []
    async with client.open_stream(upstream.url(f"/stream?end={end}"), BODY, WHAT) as stream:
        with pytest.raises(UpstreamDisconnected, match="ended the stream before it was complete"):
            await relay(stream, got)
        assert not stream.finished
    assert b"".join(got) == events(3)


async def test_done_quoted_inside_an_event_is_not_the_end(upstream, client):
    url = upstream.url("/stream?events=2&fake_done=1&end=clean")
    got: list[bytes] = []
    async with client.open_stream(url, BODY, WHAT) as stream:
        with pytest.raises(UpstreamDisconnected, match="ended the stream before it was complete"):
            await relay(stream, got)
        assert not stream.finished
    assert b"".join(got) == events(2) + chunk_event(2, content="data: [DONE]")


async def test_a_reset_connection_mid_stream_raises_upstream_disconnected(upstream, client):
    async with client.open_stream(upstream.url("/stream?events=2&end=reset"), BODY, WHAT) as s:
        relayed = s.events()
        got: list[bytes] = []
        while b"".join(got) != events(2):
            got.append(await asyncio.wait_for(anext(relayed), 10))
        upstream.release.set()  # now the upstream resets the connection
        with pytest.raises(UpstreamDisconnected, match="stopped while answering"):
            await asyncio.wait_for(anext(relayed), 10)
        assert not s.finished
    assert_whole_events(got)


async def test_a_stalled_stream_raises_upstream_timeout(upstream):
    impatient = UpstreamClient(timeout=0.5)
    got: list[bytes] = []
    try:
        url = upstream.url("/stream?events=1&end=stall")
        async with impatient.open_stream(url, BODY, WHAT) as stream:
            with pytest.raises(UpstreamTimeout, match="took too long to answer"):
                await relay(stream, got)
    finally:
        await impatient.aclose()
    assert got == [chunk_event(0)]


async def test_a_gzip_encoded_stream_is_relayed_decoded(upstream, client):
    got: list[bytes] = []
    async with client.open_stream(upstream.url("/stream?gzip=1&split=20"), BODY, WHAT) as stream:
        await relay(stream, got)
        assert stream.finished
    assert b"".join(got) == events(3) + DONE
    assert_whole_events(got)


async def test_leaving_a_stream_early_closes_the_upstream_connection(upstream, client):
    async with client.open_stream(upstream.url("/stream?hold=1"), BODY, WHAT) as stream:
        relayed = stream.events()
        assert await asyncio.wait_for(anext(relayed), 10) == chunk_event(0)
    # Leaving the block closes the connection, though the relay is only suspended, not closed;
    # the upstream sees it go, which is what makes an engine stop generating.
    await asyncio.wait_for(upstream.client_left.wait(), 10)
    await relayed.aclose()


@pytest.mark.parametrize(("status", "body", "message", "error_type"), ERROR_CASES)
async def test_open_stream_relays_an_error_status_before_streaming(
    upstream, client, status, body, message, error_type
):
    url = upstream.url(f"/error?status={status}&body={body}")
    with pytest.raises(UpstreamStatusError) as raised:
        async with client.open_stream(url, BODY, WHAT):
            pytest.fail("an error status must raise before the stream is handed out")
    assert raised.value.status_code == status
    assert raised.value.message == message
    assert raised.value.error_type == error_type


async def test_open_stream_to_a_closed_port_raises_upstream_unavailable(client):
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    with pytest.raises(UpstreamUnavailable, match="is not reachable"):
        async with client.open_stream(url, BODY, WHAT):
            pytest.fail("unreachable")


async def test_open_stream_hung_up_before_answering_raises_upstream_disconnected(upstream, client):
    with pytest.raises(UpstreamDisconnected, match="stopped while answering"):
        async with client.open_stream(upstream.url("/hangup"), BODY, WHAT):
            pytest.fail("no answer came")
    assert len(upstream.requests) == 1


async def test_open_stream_slower_than_the_timeout_raises_upstream_timeout(upstream):
    impatient = UpstreamClient(timeout=0.3)
    try:
        with pytest.raises(UpstreamTimeout):
            async with impatient.open_stream(upstream.url("/slow?delay=30"), BODY, WHAT):
                pytest.fail("no answer came")
    finally:
        await impatient.aclose()


# --- pooled connections the server closed ---------------------------------------------------


class OneAnswerPerConnection:
    """Answers the first request on a connection as if keeping it open (no `Connection: close`),
    then drops the connection when the next request arrives on it, without answering: from the
    client's side, a pooled connection that turns out to be closed, as llama-server leaves some
    after a stream. With `answer_delay`, it instead dies while working on the first request."""

    def __init__(self, answer_delay: float = 0.0) -> None:
        self.requests = 0  # requests read in full and worked on
        self.dropped = 0  # requests that met a dropped connection
        self.answer_delay = answer_delay
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def _read_request(self, reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._read_request(reader)
        self.requests += 1
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
            writer.transport.abort()  # died while working on it
            return
        body = b'{"ok": true}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await self._read_request(reader)
            self.dropped += 1
        writer.transport.abort()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_pooled_connection_the_server_closed_is_not_an_error(client):
    server = OneAnswerPerConnection()
    url = await server.start()
    try:
        for _ in range(4):
            assert await client.post(url, BODY, WHAT) == {"ok": True}
    finally:
        await server.close()
    # 1 opens a connection that is pooled; 2 meets it dropped and is sent once more, on a new
    # connection that is not kept; 3 opens one again, and 4 meets it dropped like 2.
    assert (server.requests, server.dropped) == (4, 2)


class AnswersOnce(OneAnswerPerConnection):
    """Answers the very first request (keeping its connection as if open), then drops that
    connection at the next request on it, and every later connection at once."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.requests == 0:
            await super()._handle(reader, writer)
            return
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await self._read_request(reader)
            self.dropped += 1
        writer.transport.abort()


async def test_a_stale_pooled_connection_is_resent_once_only(client):
    server = AnswersOnce()
    url = await server.start()
    try:
        assert await client.post(url, BODY, WHAT) == {"ok": True}
        with pytest.raises(UpstreamDisconnected):
            await client.post(url, BODY, WHAT)
    finally:
        await server.close()
    # The second request: the stale pooled connection, then one new connection, then no more.
    assert (server.requests, server.dropped) == (1, 2)


async def test_a_server_that_dies_while_working_is_not_sent_the_request_again(client):
    server = OneAnswerPerConnection(answer_delay=0.8)
    url = await server.start()
    try:
        with pytest.raises(UpstreamDisconnected, match="stopped while answering"):
            await client.post(url, BODY, WHAT)
    finally:
        await server.close()
    assert server.requests == 1
