"""`hearth search` and `hearth pull` without a tag, against a fake hub, with the memory there is
made deterministic by HEARTH_MEMORY_BUDGET."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hearth.cli import search as search_cli
from hearth.cli.main import cli
from hearth.engines.gpu import GPU, Accelerators
from hearth.models.fit import gb
from hearth.models.gguf_info import estimate_memory, read_gguf_info
from hearth.settings_layers import load_settings
from support.fake_hub import FakeHub, add_quantized_repo
from support.ports import free_port

REPO = "acme/Tiny-8B-GGUF"
CTX, SLOTS = 4096, 2
GIB = 1024**3


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_PORT", str(free_port()))  # no running server to ask
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("HEARTH_ENGINE__CTX_SIZE", str(CTX))
    monkeypatch.setenv("HEARTH_ENGINE__PARALLEL", str(SLOTS))


@pytest.fixture
def files(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    paths = add_quantized_repo(
        fake_hub, REPO, tmp_path / "hub", {"Q4_K_M": 1000, "Q5_K_M": 2000, "Q8_0": 4000},
        downloads=5, trendingScore=1, gguf={"total": 8_030_000_000},
    )  # fmt: skip
    add_quantized_repo(fake_hub, "other/tiny-chat-GGUF", tmp_path / "hub", {"Q4_0": 10},
                       downloads=9, trendingScore=9)  # fmt: skip
    # The memory budget lies between what Q5_K_M and Q8_0 need.
    budget = (need(paths["Q5_K_M"]) + need(paths["Q8_0"])) // 2
    monkeypatch.setenv("HEARTH_MEMORY_BUDGET", str(budget))
    return paths


def need(path: Path) -> int:
    return estimate_memory(read_gguf_info(path), path.stat().st_size, CTX, SLOTS)


def hearth(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def test_search_shows_quantizations_sizes_and_what_fits(
    files: dict[str, Path], tmp_path: Path
) -> None:
    result = hearth(tmp_path / "data", "search", "tiny", "--sort", "downloads")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "of the memory budget at ctx 4096 x 2 slots" in out
    assert out.index("other/tiny-chat-GGUF") < out.index(REPO)  # the hub's order
    row = next(line for line in out.splitlines() if REPO in line)
    assert "8.0B" in row and f"Q4_K_M {gb(files['Q4_K_M'].stat().st_size)}" in row
    assert f"Q5_K_M (needs {need(files['Q5_K_M']) / 2**20:.1f} MiB)" in row
    for tag in ("Q5_K_M", "Q8_0"):
        assert tag in out


def test_search_with_nothing_found(files: dict[str, Path], tmp_path: Path) -> None:
    result = hearth(tmp_path / "data", "search", "nothing-like-it")
    assert result.exit_code == 0 and "no GGUF repositories on the hub match" in result.stdout


def test_an_unreachable_hub_is_one_clean_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    for args in (("search", "tiny"), ("pull", REPO)):
        result = hearth(tmp_path / "data", *args)
        assert result.exit_code == 1
        assert f"Error: cannot reach the Hugging Face Hub at {endpoint}" in result.stderr
        assert "Traceback" not in result.output


def test_pull_without_a_tag_takes_the_largest_that_fits_and_says_why(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    result = hearth(data_dir, "pull", REPO)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert f"Q5_K_M ({gb(files['Q5_K_M'].stat().st_size)}) is the largest that fits" in text
    assert "of the memory budget at ctx 4096 x 2 slots" in text
    assert f"{REPO}:Q5_K_M" in hearth(data_dir, "ls").stdout


def test_quant_overrides_and_a_missing_one_lists_the_rest(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    result = hearth(data_dir, "pull", REPO, "--quant", "Q8_0")
    assert result.exit_code == 0, result.output
    assert "largest that fits" not in result.stderr
    assert f"{REPO}:Q8_0" in hearth(data_dir, "ls").stdout
    missing = hearth(data_dir, "pull", REPO, "--quant", "Q6_K")
    assert missing.exit_code == 1
    assert "has no Q6_K file; available: Q4_K_M, Q5_K_M, Q8_0" in missing.stderr


def test_a_library_style_name_gets_did_you_mean(files: dict[str, Path], tmp_path: Path) -> None:
    result = hearth(tmp_path / "data", "pull", "tiny:8b")
    assert result.exit_code == 1
    text = " ".join(result.stderr.split())
    assert f"'tiny:8b' is not a Hugging Face Hub repository; did you mean {REPO}," in text
    none = hearth(tmp_path / "data", "pull", "llama3.2")
    assert "found no GGUF repository" in " ".join(none.stderr.split())


def test_the_target_is_vram_when_a_gpu_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = Accelerators("nvidia", (GPU(0, "Test GPU", 16 * GIB, 10 * GIB),))
    monkeypatch.setattr(search_cli, "detect_accelerators", lambda: gpu)
    monkeypatch.delenv("HEARTH_MEMORY_BUDGET", raising=False)
    target = search_cli.machine_target(load_settings())
    assert (target.where, target.budget) == ("VRAM", 9 * GIB)  # 90% of the free VRAM
    assert target.describe() == f"9.0 GiB of VRAM at ctx {CTX} x {SLOTS} slots"
    monkeypatch.setenv("HEARTH_MEMORY_BUDGET", "4GiB")  # an explicit budget wins
    assert search_cli.machine_target(load_settings()).where == "the memory budget"
    monkeypatch.setattr(search_cli, "detect_accelerators", lambda: Accelerators("none"))
    monkeypatch.delenv("HEARTH_MEMORY_BUDGET")
    assert search_cli.machine_target(load_settings()).where == "RAM"
