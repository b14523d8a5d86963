"""`hearth outdated | pull --update | rollback | rm NAME@REV` and the revision in `ls`/`show`,
through click against the fake hub and a stand-in for a running server that records reloads."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hearth.cli.main import cli
from support.fake_hub import COMMIT, FakeHub
from support.gguf_files import write_gguf
from support.ports import free_port

REPO = "acme/tiny-GGUF"
FILE = "tiny-Q4_K_M.gguf"
NAME = f"{REPO}:Q4_K_M"
OLD = f"{NAME}@{COMMIT[:7]}"


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_PORT", str(free_port()))
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def hearth(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def row_of(table: str, name: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name} in:\n{table}")


def tiny(tmp_path: Path, label: str) -> bytes:
    path = write_gguf(tmp_path / "src" / f"{label}.gguf", extra={"test.label": label})
    return path.read_bytes()


@pytest.fixture
def reloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A stand-in for a running `hearth serve` that records each POST /admin/reload."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer({"data": []})

        def do_POST(self) -> None:
            seen.append(self.path)
            self._answer({"reloaded": True, "models": {}})

        def _answer(self, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    monkeypatch.setenv("HEARTH_PORT", str(server.server_address[1]))
    yield seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def pulled(data_dir: Path, fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_file(REPO, FILE, tiny(tmp_path, "first"))
    assert hearth(data_dir, "pull", NAME).exit_code == 0


def test_outdated_then_update_then_rollback(
    data_dir: Path, fake_hub: FakeHub, tmp_path: Path, pulled: None, reloads: list[str]
) -> None:
    listing = hearth(data_dir, "outdated")
    assert listing.exit_code == 0, listing.output
    assert row_of(listing.output, NAME)[1:] == [COMMIT[:7], COMMIT[:7], "up to date"]

    commit = fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    listing = hearth(data_dir, "outdated").output
    assert row_of(listing, NAME)[1:] == [
        COMMIT[:7], commit[:7], f"outdated: hearth pull --update {NAME}"
    ]  # fmt: skip

    updated = hearth(data_dir, "pull", "--update", NAME)
    assert updated.exit_code == 0, updated.output
    said = " ".join(updated.stderr.split())
    assert f"{NAME} now serves revision {commit[:7]}" in said
    assert f"the previous one, {COMMIT[:7]}, is kept as {OLD}" in said
    assert "has applied the change" in said and reloads == ["/admin/reload"]
    assert "up to date" in hearth(data_dir, "pull", "--update", NAME).stderr
    assert len(reloads) == 1  # nothing changed, nothing reloaded

    ls = hearth(data_dir, "ls").output
    assert row_of(ls, NAME)[-1] == f"{commit[:7]} (+1 kept)"
    assert row_of(ls, OLD)[-1] == f"{COMMIT[:7]} (kept)"
    shown = " ".join(hearth(data_dir, "show", NAME).output.split())
    assert f"revision {commit}" in shown and f"kept revisions {OLD}" in shown
    shown_old = " ".join(hearth(data_dir, "show", f"{NAME}@{COMMIT[:10]}").output.split())
    assert f"name {OLD}" in shown_old and f"revision {COMMIT} (kept" in shown_old

    back = hearth(data_dir, "rollback", NAME)
    assert back.exit_code == 0, back.output
    assert f"{NAME} now serves revision {COMMIT[:7]}; {commit[:7]} is kept as" in back.output
    assert len(reloads) == 2
    assert row_of(hearth(data_dir, "outdated").output, NAME)[3].startswith("outdated")


def test_removing_a_revision(
    data_dir: Path, fake_hub: FakeHub, tmp_path: Path, pulled: None, reloads: list[str]
) -> None:
    commit = fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    hearth(data_dir, "pull", "--update", NAME)
    refused = hearth(data_dir, "rm", f"{NAME}@{commit[:8]}")
    assert refused.exit_code == 1 and "hearth rollback" in refused.stderr
    removed = hearth(data_dir, "rm", f"{NAME}@{COMMIT}")
    assert removed.exit_code == 0, removed.output
    assert f"removed the revision {OLD}" in removed.output and reloads == ["/admin/reload"] * 2
    assert OLD not in hearth(data_dir, "ls").output
    assert not (data_dir / "models" / "hub" / REPO / COMMIT).exists()


def test_a_plain_pull_of_a_new_revision_keeps_the_old_one(
    data_dir: Path, fake_hub: FakeHub, tmp_path: Path, pulled: None
) -> None:
    commit = fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    again = hearth(data_dir, "pull", NAME)
    assert again.exit_code == 0, again.output
    said = " ".join(again.stderr.split())
    assert f"now serves revision {commit[:7]}" in said and f"kept as {OLD}" in said
    assert "no server answers" in said


def test_keep_revisions_zero_deletes_the_replaced_one(
    data_dir: Path,
    fake_hub: FakeHub,
    tmp_path: Path,
    pulled: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEARTH_STORE__KEEP_REVISIONS", "0")
    fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    updated = hearth(data_dir, "pull", "--update", NAME)
    assert "is deleted (store.keep_revisions is 0)" in " ".join(updated.stderr.split())
    assert not (data_dir / "models" / "hub" / REPO / COMMIT).exists()
    refused = hearth(data_dir, "rollback", NAME)
    assert refused.exit_code == 1 and "no earlier revision kept" in refused.stderr


def test_mistakes_are_said(data_dir: Path, fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_file(REPO, FILE, tiny(tmp_path, "first"))
    hearth(data_dir, "pull", NAME)
    hearth(data_dir, "import", str(write_gguf(tmp_path / "mine.gguf")), "--name", "mine")
    for args, said in (
        (("pull", "--update", NAME, "--quant", "Q8_0"), "takes the name of a pulled model alone"),
        (("pull", "--update", "mine"), "was not pulled from the Hugging Face Hub"),
        (("pull", "--update", "nothing"), "does not exist"),
        (("pull", "--update", f"{NAME}@{COMMIT[:7]}"), "not one of its revisions"),
        (("rollback", NAME), "no earlier revision kept"),
        (("rollback", "mine"), "it is imported, not pulled"),
        (("rollback", NAME, "--to", "fffffff"), "no earlier revision kept"),
        (("rm", f"{NAME}@fffffff"), "has no revision fffffff"),
        (("rm", f"{NAME}@{COMMIT[:7]}"), "hearth rollback"),
        (("show", f"{NAME}@xyz"), "does not exist"),
    ):
        result = hearth(data_dir, *args)
        assert result.exit_code == 1, (args, result.output)
        assert said in " ".join(result.stderr.split()), (args, result.stderr)
        assert "Traceback" not in result.output


def test_outdated_says_which_hub_failed(
    data_dir: Path, fake_hub: FakeHub, tmp_path: Path, pulled: None
) -> None:
    fake_hub.add_file("acme/other-GGUF", "other-Q8_0.gguf", tiny(tmp_path, "other"))
    hearth(data_dir, "pull", "acme/other-GGUF")
    fake_hub.failing_repos["acme/other-GGUF"] = 500
    listing = hearth(data_dir, "outdated")
    assert listing.exit_code == 0, listing.output
    assert row_of(listing.output, NAME)[3] == "up to date"
    row = row_of(listing.output, "acme/other-GGUF:Q8_0")
    assert row[2] == "-" and row[3].startswith("cannot check: the hub at")


def test_outdated_without_pulled_models(data_dir: Path) -> None:
    assert "no pulled models" in hearth(data_dir, "outdated").output
