"""`hearth convert` and `hearth quantize` through click (and, for Ctrl-C, as a process of its
own): a tiny checkpoint built here is converted, quantized to Q8_0 and Q4_K_M, listed, and each
of the three is served by a real `hearth serve` (llama-server) that answers a completion; Ctrl-C
leaves nothing; a Hub checkpoint comes from the fake hub; bad input gets a one-line error; an
adapter folder goes to the adapter converter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from conftest import link_bundled_model
from hearth.cli.main import cli
from hearth.models.gguf_info import read_gguf_info
from hearth.models.store import ModelStore
from support.fake_hub import FakeHub
from support.hearth_server import HearthServer
from support.ports import free_port
from support.tiny_models import make_random_lora, make_tiny_llama

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer Llama checkpoint with random weights (support.tiny_models)."""
    return make_tiny_llama(tmp_path_factory.mktemp("cli-checkpoint") / "tiny-llama")


@pytest.fixture
def data_dir(tmp_path: Path, bundled_model_dir: Path) -> Path:
    data_dir = tmp_path / "data"
    link_bundled_model(bundled_model_dir, data_dir)
    return data_dir


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens where the commands ask a running Hearth to reload (not somebody's 8080)."""
    monkeypatch.setenv("HEARTH_PORT", str(free_port()))
    monkeypatch.setenv("COLUMNS", "200")


def environment(**extra: str) -> dict[str, str]:
    """For a child process: this environment (the fake hub's HF_ENDPOINT, HEARTH_PORT above)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    return {**base, "HEARTH_PORT": os.environ["HEARTH_PORT"], **extra}


def hearth(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def manifests(data_dir: Path) -> list[str]:
    folder = data_dir / "models" / "manifests"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def made_files(data_dir: Path) -> list[Path]:
    return [
        p
        for kind in ("converted", "quantized")
        if (data_dir / "models" / kind).is_dir()
        for p in (data_dir / "models" / kind).rglob("*")
    ]


def test_convert_quantize_and_serve_each(
    checkpoint: Path, data_dir: Path, llama_server_binary: Path, tmp_path: Path
) -> None:
    done = hearth(data_dir, "convert", str(checkpoint), "--name", "tiny")
    assert done.exit_code == 0, done.output
    assert "converting tensors" in done.output  # a line per stage when not on a terminal
    assert "✓ tiny (2.7 MB)" in done.output
    assert f"converted from {checkpoint}" in done.output
    for asked, qtype in (("Q8_0", "Q8_0"), ("q4_k_m", "Q4_K_M")):
        done = hearth(data_dir, "quantize", "tiny", asked)
        assert done.exit_code == 0, done.output
        assert f"quantizing tiny to {qtype}" in done.output  # a line, not on a terminal
        assert f"✓ tiny:{qtype}" in done.output
        assert f"quantized from tiny (F16 → {qtype})" in done.output
    listed = hearth(data_dir, "ls").output
    assert "converted from" in listed and "quantized from tiny" in listed
    shown = hearth(data_dir, "show", "tiny:Q4_K_M").output
    assert "quantized from tiny (F16 → Q4_K_M)" in shown
    assert "Q4_K_M" in shown.split("quantization", 1)[1].splitlines()[0]

    store = ModelStore(data_dir / "models")
    config = tmp_path / "hearth.yaml"
    config.write_text("preload: []\nengine: {ctx_size: 2048, parallel: 1}\n")
    env = environment(HEARTH_LLAMA_SERVER=str(llama_server_binary))
    server = HearthServer(data_dir, env, ["--config", str(config)])
    try:
        server.wait_ready()
        for name, quantization in (
            ("tiny", "F16"),
            ("tiny:Q8_0", "Q8_0"),
            ("tiny:Q4_K_M", "Q4_K_M"),
        ):
            body = {"model": name, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
            response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["model"] == name
            assert answer["usage"]["completion_tokens"] > 0
            assert isinstance(answer["choices"][0]["text"], str)
            info = read_gguf_info(store.get(name).path)  # what the engine loaded
            assert info.quantization == quantization
    finally:
        server.stop()


def test_ctrl_c_while_converting_leaves_nothing(checkpoint: Path, data_dir: Path) -> None:
    argv = [sys.executable, "-m", "hearth", "convert", str(checkpoint), "--data-dir", str(data_dir)]
    with subprocess.Popen(
        argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environment()
    ) as proc:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if line.startswith(("reading the checkpoint", "converting tensors")):
                proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
                break
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, "".join(seen) + rest
    assert "interrupted: nothing was registered" in rest
    assert manifests(data_dir) == []
    assert made_files(data_dir) == []


def test_convert_a_hub_checkpoint(checkpoint: Path, data_dir: Path, fake_hub: FakeHub) -> None:
    for file in checkpoint.iterdir():
        fake_hub.add_file("acme/Tiny-Llama", file.name, file)
    done = hearth(data_dir, "convert", "acme/Tiny-Llama")
    assert done.exit_code == 0, done.output
    assert "downloading model.safetensors" in done.output
    assert "✓ acme/Tiny-Llama:F16" in done.output
    assert "converted from acme/Tiny-Llama (Hugging Face Hub" in done.output
    assert not (data_dir / "models" / "checkpoints").exists()  # the download, once converted
    assert manifests(data_dir) == ["acme%2FTiny-Llama%3AF16.json"]


def test_one_line_errors(data_dir: Path, tmp_path: Path, fake_hub: FakeHub) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        (["convert", str(tmp_path / "empty")], "is not a Hugging Face checkpoint folder"),
        (["convert", str(tmp_path / "nowhere")], "there is no folder"),
        (["convert", "acme/missing"], "there is no model repository acme/missing"),
        (["convert", str(tmp_path), "--outtype", "q4_k_m"], "Invalid value for '--outtype'"),
        (["quantize", "gemma-3-270m", "bogus"], "'bogus' is not a quantization type"),
        (["quantize", "gemma-3-270m", "Q4_0"], "pass --allow-requantize"),
        (["quantize", "no-such-model", "Q4_0"], "no-such-model"),
        (["quantize", "gemma-3-270m"], "give the model's NAME and the TYPE"),
    ]
    for args, message in cases:
        done = hearth(data_dir, *args)
        assert done.exit_code in (1, 2), (args, done.output)
        assert message in done.output, (args, done.output)
        assert done.output.startswith(("Error:", "Usage:")), (args, done.output)
    assert manifests(data_dir) == []
    assert made_files(data_dir) == []


def test_list_types(data_dir: Path) -> None:
    done = hearth(data_dir, "quantize", "--list-types")
    assert done.exit_code == 0, done.output
    assert "Q4_K_M" in done.output and "IQ4_XS" in done.output
    assert "COPY" not in done.output


def test_an_adapter_folder_goes_to_the_adapter_converter(
    checkpoint: Path, data_dir: Path, tmp_path: Path
) -> None:
    assert hearth(data_dir, "convert", str(checkpoint), "--name", "tiny").exit_code == 0
    lora = make_random_lora(tmp_path / "style", checkpoint)
    done = hearth(data_dir, "convert", str(lora))
    assert done.exit_code == 0, done.output
    assert "attached style to tiny" in done.output
    assert "'tiny+style'" in done.output
    assert manifests(data_dir) == ["tiny.json"]  # an adapter is not a model of its own
