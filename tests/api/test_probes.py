"""/health (alive) and /ready (models loaded)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from support.hearth_server import HearthServer, StartHearth

MODEL = "gemma-3-270m"
LOAD_DELAY_S = 3


def test_ready_server_reports_its_model(hearth: HearthServer) -> None:
    assert httpx.get(f"{hearth.base_url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{hearth.base_url}/ready")
    assert ready.status_code == 200
    model = ready.json()["models"][MODEL]
    assert model["state"] == "ready"
    assert model["last_error"] is None


def slow_engine(llama_server_binary: Path, folder: Path) -> Path:
    """A llama-server that waits LOAD_DELAY_S seconds before loading its model, so the time
    between Hearth answering and its model being ready is long enough to be seen from here."""
    wrapper = folder / "slow-llama-server"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" --model "*) sleep {LOAD_DELAY_S} ;; esac\n'
        f"exec '{llama_server_binary}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def test_health_answers_before_the_model_is_ready(
    start_hearth: StartHearth, llama_server_binary: Path, tmp_path: Path
) -> None:
    engine = slow_engine(llama_server_binary, tmp_path)
    server = start_hearth(ready=False, env={"HEARTH_LLAMA_SERVER": str(engine)})
    states: list[tuple[int, int, str]] = []  # (/health status, /ready status, the model's state)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{server.base_url}/health", timeout=2).status_code
            ready = httpx.get(f"{server.base_url}/ready", timeout=2)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        states.append((health, ready.status_code, ready.json()["models"][MODEL]["state"]))
        if ready.status_code == 200:
            break
        time.sleep(0.02)
    assert states, "hearth serve never answered"
    assert all(health == 200 for health, _, _ in states), states
    loading = [state for state in states if state[1] == 503]
    assert loading, f"/ready never answered 503 while the model loaded: {states}"
    assert {model for _, _, model in loading} == {"starting"}, loading
    assert states[-1] == (200, 200, "ready")
    assert states == [*loading, states[-1]]  # not ready, then ready: nothing else
