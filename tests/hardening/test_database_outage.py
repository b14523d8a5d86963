"""With the database down, admin actions that need it answer 503 `database_unavailable` (no 500,
no traceback in the log), `hearth keys create` says so in one line and exits 1, requests go on
with the cached keys, and the log says "reachable again" only once it really is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.access import (
    ADMIN_KEY,
    admin,
    block_pg_database,
    chat,
    create_key,
    gateway_config,
    hearth_cli,
    pg_database,
    reachable,
)
from support.hearth_server import StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    not reachable("127.0.0.1", 5432), reason="no PostgreSQL on 127.0.0.1:5432"
)

BACK = "database reachable again"


@pytest.fixture
def database() -> Iterator[str]:
    with pg_database() as url:
        yield url
        block_pg_database(url, blocked=False)  # before it is dropped, whatever happened


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "database_unavailable"
    assert "database is unavailable" in error["message"]


def test_admin_actions_answer_503_while_the_database_is_down(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path, database: str
) -> None:
    _, key = create_key(database, "cached")
    config = gateway_config(tmp_path / "hearth.yaml", upstream, database, {"free": ""})
    server = start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})
    assert chat(server, key).status_code == 200
    assert admin(server, "POST", "/admin/keys", json={"name": "before"}).status_code == 200

    block_pg_database(database, blocked=True)
    wait_for(lambda: "database unavailable" in server.log(), timeout=10)
    assert_unavailable(admin(server, "POST", "/admin/keys", json={"name": "during"}))
    assert_unavailable(admin(server, "GET", "/admin/usage?since=1d"))
    assert_unavailable(admin(server, "GET", "/admin/usage?by=key"))
    assert_unavailable(admin(server, "GET", "/admin/keys"))
    assert_unavailable(admin(server, "DELETE", "/admin/keys/cached"))
    assert_unavailable(admin(server, "GET", "/admin/audit"))
    assert chat(server, key).status_code == 200  # served from the cached keys
    time.sleep(2.0)  # four key refreshes, ten usage flushes: none may claim it is back
    log = server.log()
    assert BACK not in log, log
    assert "Traceback" not in log and "internal error" not in log

    block_pg_database(database, blocked=False)
    wait_for(lambda: BACK in server.log(), timeout=15)
    assert admin(server, "POST", "/admin/keys", json={"name": "after"}).status_code == 200


def test_reachable_again_is_said_only_once_it_is(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path, database: str
) -> None:
    """No traffic: the usage loop's first round has nothing to write but rolls up, and fails;
    its next rounds have nothing to write at all, which once "succeeded" without asking the
    database and so claimed it was back."""
    config = gateway_config(tmp_path / "hearth.yaml", upstream, database, {"free": ""})
    config.write_text(
        config.read_text().replace("flush_interval: 0.2", "flush_interval: 2")
        .replace("refresh_interval: 0.5", "refresh_interval: 60")
    )  # fmt: skip
    server = start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})
    block_pg_database(database, blocked=True)  # before the usage loop's first round
    wait_for(lambda: "usage rows buffered" in server.log(), timeout=10)
    time.sleep(4.5)  # two more rounds
    assert BACK not in server.log(), server.log()
    block_pg_database(database, blocked=False)
    wait_for(lambda: BACK in server.log(), timeout=10)


@pytest.mark.parametrize("where", ["blocked", "closed port"])
def test_keys_create_prints_one_line_and_exits_1(
    upstream: ScriptedUpstream, tmp_path: Path, database: str, where: str
) -> None:
    url = database if where == "blocked" else "postgresql://postgres@127.0.0.1:9/none"
    config = gateway_config(tmp_path / "hearth.yaml", upstream, database, {"free": ""})
    config.write_text(config.read_text().replace(database, url))
    create_key(database, "migrated")  # the schema exists; only reaching it fails
    block_pg_database(database, blocked=True)
    made = hearth_cli("keys", "create", "--name", "x", "--config", str(config))
    assert made.returncode == 1, made
    assert made.stdout == ""
    lines = made.stderr.strip().splitlines()
    assert len(lines) == 1, made.stderr
    assert lines[0].startswith("Error: The database is unavailable")
    assert "Traceback" not in made.stderr
