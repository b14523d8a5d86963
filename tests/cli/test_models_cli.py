"""`hearth pull | import | ls | show | rm` through click, against a fake hub and a fake server
that answers /admin/models/loaded."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hearth.cli.main import cli
from hearth.models.bundled import bundled_model_path
from support.fake_hub import FakeHub
from support.gguf_files import write_gguf
from support.ports import free_port


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default nothing listens where the CLI looks for a running Hearth."""
    monkeypatch.setenv("HEARTH_PORT", str(free_port()))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def hearth(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def row_of(table: str, name: str) -> list[str]:
    """The cells of the table row whose first cell is `name`."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name} in:\n{table}")


@pytest.fixture
def loaded_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A stand-in for a running `hearth serve`: /admin/models/loaded lists the names given."""
    names: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"data": [{"name": n, "memory": 1} for n in names]}).encode()
            self.send_response(200 if self.path == "/admin/models/loaded" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    monkeypatch.setenv("HEARTH_PORT", str(server.server_address[1]))
    yield names
    server.shutdown()
    server.server_close()


def test_help_lists_the_model_commands() -> None:
    output = CliRunner().invoke(cli, ["--help"]).output
    for command in ("pull", "import", "ls", "show", "rm"):
        assert f"  {command} " in output


def test_import_then_ls_and_show(data_dir: Path, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "tiny-chat.gguf", chat_template="{{ messages }}")
    result = hearth(data_dir, "import", str(path), "--name", "tiny")
    assert result.exit_code == 0, result.output
    assert "imported tiny" in result.output and "copied to" in result.output

    listing = hearth(data_dir, "ls")
    assert listing.exit_code == 0, listing.output
    cells = ["F16", "800", "4096", "completion, chat", "no", "-"]  # imported: no revision
    assert row_of(listing.output, "tiny")[2:] == cells
    assert "gemma-3-270m: not prepared yet" in listing.output  # listed before it is assembled

    shown = hearth(data_dir, "show", "tiny")
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    for fact in (
        "architecture llama",
        "quantization F16",
        "context length 4096 tokens (trained)",
        "chat template yes (14 characters)",
        "capabilities completion, chat",
        "estimated memory",
        "ctx_size 16384, 8 slots",
        "stored copy in the data folder",
        str(data_dir / "models" / "imported"),
    ):
        assert fact in text


def test_show_the_bundled_model_at_the_configured_context(
    data_dir: Path, bundled_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (data_dir / "models").mkdir(parents=True)
    source = bundled_model_path(bundled_model_dir)
    os.link(source, data_dir / "models" / source.name)
    monkeypatch.setenv("HEARTH_ENGINE__CTX_SIZE", "4096")
    monkeypatch.setenv("HEARTH_ENGINE__PARALLEL", "2")
    result = hearth(data_dir, "show", "gemma-3-270m")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for fact in (
        "architecture gemma3",
        "quantization Q4_K_M",
        "context length 32768",
        "parameters 268.1M",
        "no (Hearth supplies its gemma3 template)",
        "ctx_size 4096, 2 slots",
        # 18 layers * 4096 * 1 KV head * (256 + 256) * 2 bytes
        f"KV cache {18 * 4096 * 512 * 2 / 1e6:.1f} MB",
    ):
        assert fact in text


def test_import_by_reference(data_dir: Path, tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "keep-here.gguf")
    assert hearth(data_dir, "import", str(path), "--reference").exit_code == 0
    text = " ".join(hearth(data_dir, "show", "keep-here").output.split())
    assert "referenced (not copied)" in text and str(path) in text
    removed = hearth(data_dir, "rm", "keep-here")
    assert "was left in place" in removed.output and path.is_file()


def test_pull_shows_progress_and_registers(
    data_dir: Path, tmp_path: Path, fake_hub: FakeHub
) -> None:
    fake_hub.add_file("acme/tiny-GGUF", "tiny-Q4_K_M.gguf", write_gguf(tmp_path / "t.gguf"))
    result = hearth(data_dir, "pull", "acme/tiny-GGUF")
    assert result.exit_code == 0, result.output
    assert "downloading tiny-Q4_K_M.gguf" in result.stderr
    assert "acme/tiny-GGUF:Q4_K_M" in result.stderr
    assert "acme/tiny-GGUF:Q4_K_M" in hearth(data_dir, "ls").output


def test_pull_offline_is_a_clear_error(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = hearth(data_dir, "pull", "acme/tiny-GGUF")
    assert result.exit_code == 1
    assert "offline mode" in result.stderr and "hearth import PATH" in result.stderr
    assert "Traceback" not in result.output


def test_rm_is_refused_while_loaded(
    data_dir: Path, tmp_path: Path, loaded_server: list[str]
) -> None:
    hearth(data_dir, "import", str(write_gguf(tmp_path / "m.gguf")), "--name", "busy")
    loaded_server.append("busy")
    listing = hearth(data_dir, "ls").output
    assert row_of(listing, "busy")[-2] == "yes"

    refused = hearth(data_dir, "rm", "busy")
    assert refused.exit_code == 1
    assert "hearth unload busy" in refused.stderr and "--force" in refused.stderr
    assert "busy" in hearth(data_dir, "ls").output

    forced = hearth(data_dir, "rm", "busy", "--force")
    assert forced.exit_code == 0, forced.output
    assert "busy" not in hearth(data_dir, "ls").output


def test_rm_of_the_bundled_or_an_unknown_model(data_dir: Path) -> None:
    bundled = hearth(data_dir, "rm", "gemma-3-270m")
    assert bundled.exit_code == 1 and "part of Hearth" in bundled.stderr
    unknown = hearth(data_dir, "rm", "nope")
    assert unknown.exit_code == 1
    assert "does not exist. Available models: gemma-3-270m" in unknown.stderr
