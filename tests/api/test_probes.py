"""/health (alive) and /ready (models loaded)."""

from __future__ import annotations

import time

import httpx

from support.hearth_server import HearthServer, StartHearth


def test_ready_server_reports_its_model(hearth: HearthServer) -> None:
    assert httpx.get(f"{hearth.base_url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{hearth.base_url}/ready")
    assert ready.status_code == 200
    model = ready.json()["models"]["gemma-3-270m"]
    assert model["state"] == "ready"
    assert model["last_error"] is None


def test_health_answers_before_the_model_is_ready(start_hearth: StartHearth) -> None:
    server = start_hearth(ready=False)
    states: list[tuple[int, int]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{server.base_url}/health", timeout=2).status_code
            ready = httpx.get(f"{server.base_url}/ready", timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        states.append((health, ready))
        if ready == 200:
            break
        time.sleep(0.02)
    assert states and states[-1] == (200, 200)
    assert all(health == 200 for health, _ in states)
    assert all(ready in (200, 503) for _, ready in states)
