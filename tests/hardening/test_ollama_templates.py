"""A hostile Ollama `template` on /api/generate is refused in milliseconds and never stalls the
server: it was rendered by a backtracking regex on the event loop (`{{` and 1,000 spaces held
/health for 9 s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from support.hearth_server import HearthServer, StartHearth

MODEL = "gemma-3-270m"  # in the catalogue; never loaded, since a bad template fails first


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> HearthServer:
    config: Path = tmp_path_factory.mktemp("templates") / "hearth.yaml"
    config.write_text("preload: []\n")
    return start_hearth("--config", str(config))


def generate(server: HearthServer, template: str) -> httpx.Response:
    body = {"model": MODEL, "prompt": "hi", "template": template, "stream": False}
    return httpx.post(f"{server.base_url}/api/generate", json=body, timeout=5)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{" + " " * 4000, "has no closing '}}'"),
        ("{{" * 2000, "has no closing '}}'"),
        ("{{ if .System }}" * 2000, "nested deeper than"),
        ("{{ if .Prompt }}x", "an 'if' has no 'end'"),
        ("{{ end }}", "an 'end' has no 'if'"),
        ("{{ range .Messages }}{{ end }}", "does not support the template action"),
        ("x" * 70_000, "longer than 65536 characters"),
    ],
)
def test_invalid_templates_are_a_quick_400_naming_the_problem(
    server: HearthServer, template: str, problem: str
) -> None:
    started = time.perf_counter()
    answer = generate(server, template)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 400, answer.text
    assert problem in answer.json()["error"]
    assert elapsed < 0.5


def test_health_answers_while_hostile_templates_arrive(server: HearthServer) -> None:
    hostile = "{{" + " " * 4000
    answers: list[int] = []

    def attack() -> None:
        for _ in range(5):
            try:
                answers.append(generate(server, hostile).status_code)
            except httpx.TimeoutException:
                answers.append(0)

    thread = threading.Thread(target=attack)
    thread.start()
    try:
        slowest = 0.0
        while thread.is_alive():
            started = time.perf_counter()
            assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.01)
    finally:
        thread.join()
    assert answers == [400] * 5
    assert slowest < 0.5
