"""Work nobody waits for is cancelled: a non-streamed request whose client hung up stops the
engine, a queued request whose client left never starts, the queue has a wait limit, and a
request's outcome is recorded as what the client got (499 when it left)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from support.engine_probe import engine_url, slots_busy, tokens_held, usage_rows
from support.hearth_server import HearthServer, StartHearth

MODEL = "gemma-3-270m"
LONG_TOKENS = 1500
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write forever."}],
    "max_tokens": LONG_TOKENS,
    "ignore_eos": True,
}


def _wait_until(condition: object, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


# llama-server checks whether a waiting client left once per second of *quiet*: each answer to
# another request (such as GET /slots) wakes its wait and restarts that second. Asking /slots
# more often than that would itself keep the engine from noticing the hang-up.
ENGINE_POLL_S = 1.5


def _hold_the_only_slot(server: HearthServer, url: str, max_tokens: int) -> threading.Thread:
    """A request that keeps the engine's one slot busy for a while, in a thread."""
    body = {**LONG, "max_tokens": max_tokens}
    holder = threading.Thread(
        target=lambda: httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)
    )
    holder.start()
    assert _wait_until(lambda: slots_busy(url) == 1, 30)
    return holder


def _post_then_hang_up(server: HearthServer, body: dict[str, object], when: object) -> None:
    """Send a non-streamed chat request on a raw socket and close it once `when()` holds: a
    client that leaves at a known point, however fast or slow this machine is."""
    payload = json.dumps(body).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + payload)
        assert _wait_until(when, 60, ENGINE_POLL_S), "the engine never started generating"


def test_a_plain_request_whose_client_left_stops_the_engine(start_hearth: StartHearth) -> None:
    server = start_hearth()
    url = engine_url(server)
    # Hang up once the engine is working on this request.
    _post_then_hang_up(server, LONG, lambda: slots_busy(url) == 1)
    assert _wait_until(lambda: slots_busy(url) == 0, 30, ENGINE_POLL_S), (
        "the engine is still generating"
    )
    # What the slot holds says whether it stopped early, however fast this machine is: a slot
    # left generating for nobody would hold the prompt and all 1500 tokens.
    held = tokens_held(url)
    assert 0 < held < LONG_TOKENS, f"the engine generated {held} tokens for nobody"
    # Recorded as what the client got: nothing (499), in usage and in the metrics.
    assert _wait_until(lambda: any(r["status"] == 499 for r in usage_rows(server)), 10)
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert 'status="499"' in metrics


def test_a_queued_request_whose_client_left_never_starts(start_hearth: StartHearth) -> None:
    server = start_hearth(env={"HEARTH_ENGINE__PARALLEL": "1"})
    url = engine_url(server)
    holder = _hold_the_only_slot(server, url, max_tokens=300)
    queued = {**LONG, "messages": [{"role": "user", "content": "queued and abandoned"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json=queued, timeout=1)
    holder.join(timeout=300)
    # Once the holder is done, the abandoned request must not run: the slot stays idle.
    time.sleep(1.5)
    assert slots_busy(url) == 0
    prompts = httpx.get(f"{url}/slots", timeout=5).json()
    assert all("queued and abandoned" not in str(slot.get("prompt", "")) for slot in prompts)


def test_the_queue_has_a_wait_limit(start_hearth: StartHearth) -> None:
    server = start_hearth(env={"HEARTH_ENGINE__PARALLEL": "1", "HEARTH_REQUEST_QUEUE_TIMEOUT": "1"})
    url = engine_url(server)
    holder = _hold_the_only_slot(server, url, max_tokens=200)
    started = time.monotonic()
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=LONG, timeout=60)
    waited = time.monotonic() - started
    holder.join(timeout=300)
    assert response.status_code == 503, response.text
    assert "request_queue_timeout" in response.json()["error"]["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert waited < 10


def test_a_stream_the_client_left_is_recorded_as_499(start_hearth: StartHearth) -> None:
    server = start_hearth()
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/chat/completions",
        json={**LONG, "stream": True},
        timeout=60,
    ) as response:
        lines = (line for line in response.iter_lines() if line.startswith("data: "))
        _ = [next(lines) for _ in range(3)]
    assert _wait_until(lambda: any(r["status"] == 499 for r in usage_rows(server)), 10)
    (row,) = [r for r in usage_rows(server) if r["status"] == 499]
    assert row["completion_tokens"] >= 2  # billed for the content it was sent (docs/operations.md)
    log = server.log()
    assert _wait_until(lambda: " 499" in server.log(), 5), log[-2000:]
