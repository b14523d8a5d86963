"""Paths and names from outside stay inside: a hostile hub mirror cannot make a pull write (nor a
later delete remove) files outside the models folder, and over-long model names are a 400 naming
the limit, not a 500."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from hearth.models.store import MAX_NAME_LENGTH
from support.fake_hub import FakeHub
from support.gguf_files import write_gguf
from support.hearth_server import HearthServer, StartHearth

HOSTILE_REPO = "acme/hostile-GGUF"


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside every data folder, where nothing may appear."""
    return tmp_path_factory.mktemp("outside")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, outside: Path) -> Iterator[FakeHub]:
    hub = FakeHub()
    source = write_gguf(tmp_path_factory.mktemp("hub-files") / "m.gguf")
    # From hub/acme/<repo>/ under the models folder, five levels up leave the data folder.
    hub.add_file(HOSTILE_REPO + "1", "../../../../../evil-Q4_K_M.gguf", source)
    hub.add_file(HOSTILE_REPO + "2", str(outside / "x-Q4_K_M.gguf"), source)
    hub.add_file(HOSTILE_REPO + "3", "sub\\..\\..\\win-Q4_K_M.gguf", source)
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, hub: FakeHub, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    config: Path = tmp_path_factory.mktemp("paths") / "hearth.yaml"
    config.write_text("preload: []\n")
    home = tmp_path_factory.mktemp("hf-home")
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home), "HF_TOKEN": "", "HF_HUB_OFFLINE": "0"}
    return start_hearth("--config", str(config), env=env)


def gguf_files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.gguf"))


@pytest.mark.parametrize(
    ("repo", "problem"),
    [
        (HOSTILE_REPO + "1", "has an empty, '.' or '..' part"),
        (HOSTILE_REPO + "2", "is an absolute path"),
        (HOSTILE_REPO + "3", "holds a backslash"),
    ],
)
def test_a_pull_refuses_unsafe_names_from_the_hub(
    server: HearthServer, outside: Path, repo: str, problem: str
) -> None:
    before = gguf_files_under(server.data_dir.parent)
    answer = httpx.post(
        f"{server.base_url}/api/pull", json={"model": f"hf.co/{repo}", "stream": False}, timeout=30
    )
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert "unsafe" in message and problem in message and "nothing was downloaded" in message
    assert gguf_files_under(outside) == []
    assert gguf_files_under(server.data_dir.parent) == before  # nothing new anywhere near
    assert repo not in httpx.get(f"{server.base_url}/api/tags").text


def plant_manifest(server: HearthServer, name: str, files: list[str]) -> None:
    """A manifest as a tampered (or hand-edited) store might hold it."""
    manifests = server.data_dir / "models" / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "kind": "pulled", "source": "planted", "files": files, "copied": True,
            "size": 1, "added": None, "sha256": []}  # fmt: skip
    (manifests / f"{quote(name, safe='')}.json").write_text(json.dumps(data))


def delete(server: HearthServer, name: str) -> httpx.Response:
    return httpx.request(
        "DELETE", f"{server.base_url}/api/delete", json={"model": name}, timeout=30
    )


def test_delete_never_removes_files_outside_the_models_folder(
    server: HearthServer, tmp_path: Path
) -> None:
    victim = write_gguf(tmp_path / "victim.gguf")
    victim.with_name("victim.gguf.sha256").write_text("x\n")
    relative = os.path.relpath(victim, server.data_dir / "models")
    plant_manifest(server, "climbs", [relative])
    plant_manifest(server, "absolute", [str(victim)])
    # A folder inside the models folder that is a link to one outside it.
    linked = server.data_dir / "models" / "hub" / "acme" / "linked"
    linked.parent.mkdir(parents=True, exist_ok=True)
    linked.symlink_to(tmp_path, target_is_directory=True)
    plant_manifest(server, "acme/linked:Q4_K_M", ["hub/acme/linked/victim.gguf"])
    for name in ("climbs", "absolute", "acme/linked:Q4_K_M"):
        answer = delete(server, name)
        assert answer.status_code == 200, answer.text
        assert victim.is_file() and victim.with_name("victim.gguf.sha256").is_file(), name
    assert tmp_path.is_dir() and linked.is_symlink()


def test_over_long_names_are_a_400_naming_the_limit(server: HearthServer) -> None:
    long = "m" * 300
    answers = [
        delete(server, long),
        httpx.post(f"{server.base_url}/api/copy", json={"source": long, "destination": "x"}),
        httpx.post(
            f"{server.base_url}/api/copy", json={"source": "gemma-3-270m", "destination": long}
        ),
    ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert f"at most {MAX_NAME_LENGTH} characters" in answer.json()["error"]
    assert "Traceback" not in server.log()
