"""`hearth adapter add | ls | rm`, adapters in `hearth show`, `hearth rm` and `hearth create
--adapter`, through click and without a server (the end to end test with one is
tests/engines/llama_cpp/test_lora.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hearth.cli.main import cli
from support.lora_files import TinyLora
from support.ports import free_port


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_PORT", str(free_port()))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def data_dir(tmp_path: Path, tiny_lora: TinyLora) -> Path:
    data = tmp_path / "data"
    assert hearth(data, "import", str(tiny_lora.base_gguf), "--name", "tiny").exit_code == 0
    return data


def hearth(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def test_add_ls_show_rm(data_dir: Path, tiny_lora: TinyLora) -> None:
    added = hearth(data_dir, "adapter", "add", "tiny", "one", str(tiny_lora.gguf["one"]))
    assert added.exit_code == 0, added.output
    assert "attached one to tiny" in added.output and "'tiny+one'" in added.output
    assert "no server answers" in added.output
    converted = hearth(
        data_dir, "adapter", "add", "tiny", "two", str(tiny_lora.peft["two"]),
        "--base", str(tiny_lora.base),
    )  # fmt: skip
    assert converted.exit_code == 0, converted.output
    assert "successfully exported" in converted.output

    listed = hearth(data_dir, "adapter", "ls").output
    assert "tiny+one" in listed and "tiny+two" in listed and str(tiny_lora.peft["two"]) in listed
    assert "ask for tiny+one" in hearth(data_dir, "show", "tiny").output

    made = hearth(data_dir, "create", "tuned", "--from", "tiny", "--adapter", "two")
    assert made.exit_code == 0, made.output
    shown = hearth(data_dir, "show", "tuned").output.splitlines()
    assert ["adapter", "two"] in [line.split() for line in shown]
    wrong = hearth(data_dir, "create", "p", "--from", "tiny", "--adapter", "three")
    assert wrong.exit_code != 0
    assert "'tiny' has no adapter 'three'; its adapters: one, two" in wrong.output

    removed = hearth(data_dir, "adapter", "rm", "tiny", "one")
    assert removed.exit_code == 0 and "removed the adapter one of tiny" in removed.output
    assert "tiny+one" not in hearth(data_dir, "adapter", "ls", "tiny").output
    again = hearth(data_dir, "adapter", "rm", "tiny", "one")
    assert again.exit_code != 0 and "its adapters: two" in again.output

    assert hearth(data_dir, "rm", "tuned").exit_code == 0
    gone = hearth(data_dir, "rm", "tiny")
    assert gone.exit_code == 0 and "removed its adapters two" in gone.output
    assert not (data_dir / "models" / "adapters").exists() or not any(
        (data_dir / "models" / "adapters").iterdir()
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["nope", "one", "ONE"], "'nope' does not exist"),
        (["tiny", "../x", "ONE"], "cannot name an adapter"),
        (["tiny", "m", "BASE_GGUF"], "is not a LoRA adapter"),
        (["tiny", "o", "OTHER"], "does not fit its model"),
        (["tiny", "f", "BASE_FOLDER"], "without adapter_config.json"),
        (["tiny", "p", "PEFT"], "--base FOLDER"),  # 'tiny' came from a GGUF, not a checkpoint
        (["tiny", "x", "/does/not/exist"], "does not exist"),
    ],
)
def test_bad_input_is_a_clean_error(
    data_dir: Path, tiny_lora: TinyLora, args: list[str], problem: str
) -> None:
    files = {
        "ONE": tiny_lora.gguf["one"], "BASE_GGUF": tiny_lora.base_gguf,
        "OTHER": tiny_lora.other_gguf, "BASE_FOLDER": tiny_lora.base,
        "PEFT": _hub_named(tiny_lora, data_dir.parent),
    }  # fmt: skip
    result = hearth(data_dir, "adapter", "add", *[str(files.get(a, a)) for a in args])
    assert result.exit_code != 0
    assert problem in result.output
    assert "Traceback" not in result.output
    assert "tiny+" not in hearth(data_dir, "adapter", "ls").output


def _hub_named(tiny_lora: TinyLora, where: Path) -> Path:
    """The adapter with a hub id as its base: nothing local to read the base's config from."""
    import json
    import shutil

    folder = where / "hub-named"
    if not folder.exists():
        shutil.copytree(tiny_lora.peft["one"], folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "someone/llama"
        (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder
