"""Admin query values out of range are a 400 naming the problem, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.access import ADMIN_KEY, admin, gateway_config
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    folder: Path = tmp_path_factory.mktemp("admin-inputs")
    config = gateway_config(
        folder / "hearth.yaml", upstream, f"sqlite:///{folder / 'keys.db'}", {"free": ""}
    )
    return start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})


@pytest.mark.parametrize("since", ["99999999d", "9" * 40 + "h", "1" * 400 + "m"])
def test_a_usage_span_past_the_calendar_is_a_400(server: HearthServer, since: str) -> None:
    answer = admin(server, "GET", f"/admin/usage?since={since}")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "since" and "before the year 1" in error["message"]


def test_a_usage_span_within_it_is_answered(server: HearthServer) -> None:
    assert admin(server, "GET", "/admin/usage?since=3650d").status_code == 200
    assert "Traceback" not in server.log()
