"""A scripted upstream and a gateway Hearth in front of it with keys in a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.access import ADMIN_KEY, gateway_config
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

DEPLOYMENTS = {
    "free": "aliases: [free-alias]",
    "other": "",
    "pricey": "price: {input: 5, output: 15}",
}


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'keys.db'}"


@pytest.fixture(scope="module")
def config_path(
    upstream: ScriptedUpstream, db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    config: Path = tmp_path_factory.mktemp("gw") / "hearth.yaml"
    teams = "  teams:\n    blue: {rpm: 3}\n"
    gateway_config(config, upstream, db_url, DEPLOYMENTS)
    text = config.read_text().replace(
        "  refresh_interval: 0.5\n", "  refresh_interval: 0.5\n" + teams
    )
    config.write_text(text)
    return config


@pytest.fixture(scope="module")
def gateway(start_hearth: StartHearth, config_path: Path) -> HearthServer:
    return start_hearth("--config", str(config_path), env={"TEST_ADMIN_KEY": ADMIN_KEY})
