"""Work nobody waits for is cancelled: a non-streamed request whose client hung up stops the
engine, a queued request whose client left never starts, the queue has a wait limit, and a
request's outcome is recorded as what the client got (499 when it left)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from support.engine_probe import engine_url, slots_busy, usage_rows
from support.hearth_server import HearthServer, StartHearth

MODEL = "gemma-3-270m"
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Write forever."}],
    "max_tokens": 1500,
    "ignore_eos": True,
}


def _wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _hold_the_only_slot(server: HearthServer, url: str, max_tokens: int) -> threading.Thread:
    """A request that keeps the engine's one slot busy for a while, in a thread."""
    body = {**LONG, "max_tokens": max_tokens}
    holder = threading.Thread(
        target=lambda: httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)
    )
    holder.start()
    assert _wait_until(lambda: slots_busy(url) == 1, 30)
    return holder


def test_a_plain_request_whose_client_left_stops_the_engine(start_hearth: StartHearth) -> None:
    server = start_hearth()
    url = engine_url(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json=LONG, timeout=3)
    # 1500 tokens take far longer than this: the slot is free only if generation stopped.
    assert _wait_until(lambda: slots_busy(url) == 0, 5), "the engine is still generating"
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
