"""`hearth create` and presets in `hearth ls | show | rm`, through click; and a running
`hearth serve` that serves a preset the command creates, without a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hearth.cli.main import cli
from support.hearth_server import StartHearth
from support.ports import free_port

BASE = "gemma-3-270m"


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


def test_create_ls_show_rm(data_dir: Path, tmp_path: Path) -> None:
    template = tmp_path / "template.txt"
    template.write_text("{{ .System }} {{ .Prompt }}")
    made = hearth(
        data_dir, "create", "pirate", "--from", BASE, "--system", "Talk like a pirate.",
        "--param", "temperature=0.2", "--param", "stop=END", "--param", "stop=FIN",
        "--param", "num_predict=50", "--template", str(template),
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "created pirate from gemma-3-270m" in made.output
    assert "no server answers" in made.output

    listed = hearth(data_dir, "ls")
    [row] = [line for line in listed.output.splitlines() if "pirate" in line]
    assert "preset" in row and f"from {BASE}" in row

    shown = hearth(data_dir, "show", "pirate")
    assert shown.exit_code == 0, shown.output
    for text in ("Talk like a pirate.", "temperature 0.2", "stop ['END', 'FIN']", BASE):
        assert text in shown.output
    assert "num_predict 50" in shown.output and "27 characters" in shown.output

    refused = hearth(data_dir, "rm", BASE)
    assert refused.exit_code != 0 and "pirate is built on gemma-3-270m" in refused.output

    removed = hearth(data_dir, "rm", "pirate")
    assert removed.exit_code == 0 and "removed the preset pirate" in removed.output
    assert "pirate" not in hearth(data_dir, "ls").output
    assert hearth(data_dir, "show", "pirate").exit_code != 0


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["../evil", "--from", BASE], "cannot name a model"),
        (["a/b/c", "--from", BASE], "cannot name a model"),
        (["p", "--from", "nope"], "no model named 'nope'"),
        (["p", "--from", BASE, "--param", "temperature=hot"], "parameters.temperature"),
        (["p", "--from", BASE, "--param", "temperature=9"], "parameters.temperature"),
        (["p", "--from", BASE, "--param", "num_ctx=8192"], "engine setting"),
        (["p", "--from", BASE, "--param", "colour=blue"], "not a parameter"),
        (["p", "--from", BASE, "--param", "temperature"], "NAME=VALUE"),
        (["p", "--from", BASE, "--adapter", "lora"], "has no adapter 'lora'; its adapters: none"),
        ([BASE, "--from", BASE], "model in the store"),
        (["p"], "Missing option '--from'"),
    ],
)
def test_bad_input_is_a_clean_error(data_dir: Path, args: list[str], problem: str) -> None:
    result = hearth(data_dir, "create", *args)
    assert result.exit_code != 0
    assert problem in result.output
    assert "Traceback" not in result.output
    assert not (data_dir / "models" / "presets").exists()


def test_a_running_server_serves_it_at_once(
    start_hearth: StartHearth, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_hearth()
    monkeypatch.setenv("HEARTH_PORT", str(server.port))
    made = hearth(server.data_dir, "create", "quick", "--from", BASE, "--param", "num_predict=3")
    assert made.exit_code == 0, made.output
    assert "has applied the change" in made.output
    client = server.openai()
    assert "quick" in [m.id for m in client.models.list()]
    answer = client.chat.completions.create(
        model="quick", messages=[{"role": "user", "content": "Count to twenty."}]
    )
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 3
    assert answer.model == "quick"

    removed = hearth(server.data_dir, "rm", "quick")
    assert removed.exit_code == 0 and "has applied the change" in removed.output
    assert "quick" not in [m.id for m in client.models.list()]
