"""What reaches a response header or a log line is safe: no forged access-log lines from `%0A`, no
broken `x-hearth-deployment` from an upstream's odd model id, a bounded `x-hearth-priority`, and
the `--no-auth` warning in the banner whatever the log level."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.waiting import wait_for

ODD_NAME = "line\nbreak \u2603"  # a newline ends a header; a snowman is not latin-1
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    upstream.model_ids["imp"] = ["good", "bad\nid", "tab\tid", "x" * 300]
    config: Path = tmp_path_factory.mktemp("headers") / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        "routing: {retries: 0, health_check_interval: 0}\n"
        "deployments:\n"
        f"  plain: {{url: '{upstream.url('plain')}'}}\n"
        f"  imp: {{url: '{upstream.url('imp')}', import_models: true}}\n"
        f"  \"line\\nbreak \\u2603\": {{url: '{upstream.url('odd')}'}}\n"
    )
    return start_hearth("--config", str(config))


def chat(server: HearthServer, model: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": model, **CHAT},
        headers=headers,
        timeout=10,
    )


def access_lines(server: HearthServer) -> list[str]:
    return [line for line in server.log().splitlines() if "hearth.access" in line]


def test_an_encoded_newline_in_the_path_cannot_forge_a_log_line(server: HearthServer) -> None:
    answer = httpx.get(f"{server.base_url}/v1/models%0AFAKE%20200", timeout=10)
    assert answer.status_code == 404
    wait_for(lambda: any("FAKE" in line for line in access_lines(server)))
    lines = [line for line in server.log().splitlines() if "FAKE" in line]
    assert len(lines) == 1, lines
    assert "hearth.access" in lines[0] and "/v1/models%0AFAKE%20200 404" in lines[0]


def test_a_newline_in_a_model_name_cannot_forge_a_log_line(server: HearthServer) -> None:
    assert chat(server, "nope\nFORGED 200").status_code == 404
    assert chat(server, ODD_NAME).status_code == 200
    wait_for(lambda: sum("/v1/chat/completions" in line for line in access_lines(server)) >= 2)
    log = server.log().splitlines()
    assert not [line for line in log if line.startswith(("FORGED", "break"))]


def test_imported_model_ids_with_control_characters_are_skipped(server: HearthServer) -> None:
    listed = httpx.get(f"{server.base_url}/v1/models", timeout=10).json()["data"]
    ids = {model["id"] for model in listed}
    assert "imp/good" in ids
    assert not [i for i in ids if i.startswith("imp/") and i != "imp/good"], ids
    assert "not importing the model 'bad\\nid' of" in server.log()
    assert "not importing the model 'tab\\tid' of" in server.log()
    answer = chat(server, "imp/good")
    assert answer.status_code == 200 and answer.headers["x-hearth-deployment"] == "imp/good"
    assert chat(server, "imp/bad\nid").status_code == 404


def test_a_deployment_name_unfit_for_a_header_is_encoded(server: HearthServer) -> None:
    answer = chat(server, ODD_NAME)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-hearth-deployment"] == "line%0Abreak %E2%98%83"
    stream = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": ODD_NAME, "stream": True, **CHAT},
        timeout=10,
    )
    assert stream.status_code == 200 and "[DONE]" in stream.text
    assert stream.headers["x-hearth-deployment"] == "line%0Abreak %E2%98%83"
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("priority", ["1e30", "1" + "0" * 30, "11", "-11", "+", "0x5", "1_0", ""])
def test_priorities_outside_the_range_are_refused(server: HearthServer, priority: str) -> None:
    answer = chat(server, "plain", **{"x-hearth-priority": priority})
    assert answer.status_code == 400, answer.text
    assert "from -10 to 10" in answer.json()["error"]["message"]


@pytest.mark.parametrize("priority", ["10", "-10", "0", "+3", "007"])
def test_priorities_inside_the_range_are_taken(server: HearthServer, priority: str) -> None:
    assert chat(server, "plain", **{"x-hearth-priority": priority}).status_code == 200


def test_the_no_auth_warning_is_in_the_banner_at_any_log_level(
    start_hearth: StartHearth, tmp_path: Path
) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text("preload: []\nlog_level: error\n")
    server = start_hearth("--config", str(config), "--no-auth")
    assert "auth:   OFF (no_auth)" in server.log()
    server.stop()
