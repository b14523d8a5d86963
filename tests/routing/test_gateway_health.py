"""Background health checks feed the breakers, and a route falls back from a local model whose
engine cannot start to a remote deployment (local first, remote when local is down)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from routing.test_gateway import HI, scrape
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.waiting import wait_for


@pytest.fixture(scope="module")
def probed(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    config: Path = tmp_path_factory.mktemp("probed") / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        "routing:\n"
        "  health_check_interval: 0.2\n"
        "  breaker: {failures: 2, window: 60, cooldown: 1}\n"
        "deployments:\n"
        f"  sick: {{url: '{upstream.url('sick')}'}}\n"
        f"  cloud: {{url: '{upstream.url('cloud')}', health_check: false}}\n"
        "routes:\n"
        "  local-first: {deployments: [gemma-3-270m, cloud]}\n"
    )
    # An engine that exits at once: the local model can never load.
    return start_hearth("--config", str(config), env={"HEARTH_LLAMA_SERVER": "/bin/false"})


def test_failing_health_checks_open_the_breaker_and_passing_ones_close_it(
    probed: HearthServer, upstream: ScriptedUpstream
) -> None:
    upstream.set_default("sick", "status:500")
    wait_for(
        lambda: scrape(probed, "hearth_deployment_breaker_state", deployment="sick") == 2,
        10,
        "the breaker to open",
    )
    assert upstream.hits("sick") == 0  # no request was needed to find out
    refused = httpx.post(
        f"{probed.base_url}/v1/chat/completions", json={"model": "sick", "messages": HI}
    )
    assert refused.status_code == 503 and "circuit open" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    upstream.set_default("sick", "ok")
    wait_for(
        lambda: scrape(probed, "hearth_deployment_breaker_state", deployment="sick") == 0,
        10,
        "the breaker to close",
    )
    assert upstream.models_probes["cloud"] == 0  # health_check: false


def test_a_local_model_that_cannot_load_falls_back_to_the_remote(
    probed: HearthServer, upstream: ScriptedUpstream
) -> None:
    response = httpx.post(
        f"{probed.base_url}/v1/chat/completions",
        json={"model": "local-first", "messages": HI},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-hearth-deployment"] == "cloud"
    assert response.json()["choices"][0]["message"]["content"] == "cloud says hi"
