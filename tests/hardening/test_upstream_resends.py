"""An upstream that drops every connection at once gets one send per attempt the router makes:
the upstream client resends only after the keep-alive race (a pooled connection that had been
closed while idle), never after a new connection fails. It used to resend up to three times per
attempt: 12 sends for one request with three attempts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import fault_upstream
from support.fault_upstream import FaultUpstream
from support.hearth_server import HearthServer, StartHearth

RETRIES = 2  # the router's: three attempts in all


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultUpstream]:
    with fault_upstream.in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, fault: FaultUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    config: Path = tmp_path_factory.mktemp("resends") / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        f"routing: {{retries: {RETRIES}, backoff: 0.01, backoff_max: 0.05, "
        "health_check_interval: 0, breaker: {failures: 100}}\n"
        "deployments:\n"
        f"  dropper: {{url: '{fault.url('/hangup/v1')}'}}\n"
    )
    return start_hearth("--config", str(config))


def chat(server: HearthServer, model: str, stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize("stream", [False, True])
def test_one_request_is_sent_once_per_attempt(
    server: HearthServer, fault: FaultUpstream, stream: bool
) -> None:
    connections, sent = fault.connections, len(fault.requests)
    answer = chat(server, "dropper", stream)
    assert answer.status_code in (502, 503), answer.text
    assert answer.headers.get("x-hearth-attempts", str(RETRIES + 1)) == str(RETRIES + 1)
    assert len(fault.requests) - sent == RETRIES + 1
    assert fault.connections - connections == RETRIES + 1
