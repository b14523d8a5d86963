"""Searching the hub (a loopback fake with the search API's shape) and pulling what fits:
quantizations with sizes and needs, the hub's order, the largest that fits chosen by a pull
without a tag, `quant` overriding it, suggestions for Ollama-style names, and a hub that does not
answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.errors import HubUnreachable, PullError
from hearth.models.fit import FitTarget, gb
from hearth.models.gguf_info import estimate_memory, read_gguf_info
from hearth.models.pull import pull
from hearth.models.search import (
    library_name_message,
    parameters_from_name,
    search,
    suggestions,
)
from hearth.models.store import ModelStore
from support.fake_hub import FakeHub, add_quantized_repo
from support.ports import free_port

REPO = "acme/Tiny-8B-GGUF"
ROWS = {"Q4_K_M": 1000, "Q5_K_M": 2000, "Q8_0": 4000}
CTX, SLOTS = 4096, 2


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "data" / "models")


@pytest.fixture
def files(fake_hub: FakeHub, tmp_path: Path) -> dict[str, Path]:
    paths = add_quantized_repo(fake_hub, REPO, tmp_path / "hub", ROWS, downloads=50, likes=1,
                               trendingScore=1, gguf={"total": 8_030_000_000})  # fmt: skip
    add_quantized_repo(fake_hub, "other/tiny-chat-GGUF", tmp_path / "hub", {"Q4_0": 10},
                       downloads=900, likes=7, trendingScore=9)  # fmt: skip
    fake_hub.add_file("acme/tiny-safetensors", "model.safetensors", b"not gguf")
    return paths


def need(path: Path) -> int:
    return estimate_memory(read_gguf_info(path), path.stat().st_size, CTX, SLOTS)


def between(files: dict[str, Path], low: str, high: str) -> FitTarget:
    """A target that `low` fits and `high` does not."""
    assert need(files[low]) < need(files[high])
    return FitTarget((need(files[low]) + need(files[high])) // 2, "RAM", CTX, SLOTS)


def test_search_lists_gguf_repos_with_quantizations_and_fit(files: dict[str, Path]) -> None:
    target = between(files, "Q5_K_M", "Q8_0")
    repos = search("tiny", target, sort="downloads")
    assert [r.repo_id for r in repos] == ["other/tiny-chat-GGUF", REPO]  # no safetensors repo
    repo = repos[1]
    assert repo.parameters == 8_030_000_000 and repo.shape_known
    assert [(f.choice.tag, f.size) for f in repo.fits] == [
        (tag, files[tag].stat().st_size) for tag in ("Q4_K_M", "Q5_K_M", "Q8_0")
    ]
    assert [f.need for f in repo.fits] == [need(files[t]) for t in ("Q4_K_M", "Q5_K_M", "Q8_0")]
    assert [f.fits for f in repo.fits] == [True, True, False]
    assert repo.best is not None and repo.best.choice.tag == "Q5_K_M"


def test_search_follows_the_hubs_order_and_limit(files: dict[str, Path]) -> None:
    target = FitTarget(10**12, "RAM", CTX, SLOTS)
    assert [r.repo_id for r in search("tiny", target, sort="trending", limit=1)] == [
        "other/tiny-chat-GGUF"
    ]
    assert [r.repo_id for r in search("8b", target)] == [REPO]
    assert search("nothing-like-it", target) == []


def test_parameters_from_the_name_when_the_hub_reports_none() -> None:
    assert parameters_from_name("bartowski/Qwen3-8B-GGUF") == 8_000_000_000
    assert parameters_from_name("x/SmolLM2-360M-Instruct-GGUF") == 360_000_000
    assert parameters_from_name("x/Llama-3.2-1.5B-GGUF") == 1_500_000_000
    assert parameters_from_name("x/gemma-GGUF") is None


def test_pull_without_a_tag_takes_the_largest_that_fits_and_says_why(
    files: dict[str, Path], store: ModelStore
) -> None:
    reasons: list[str] = []
    target = between(files, "Q5_K_M", "Q8_0")
    model = pull(REPO, store, fit=target, explain=reasons.append)
    assert model.name == f"{REPO}:Q5_K_M"
    assert model.files[0].read_bytes() == files["Q5_K_M"].read_bytes()
    size = gb(files["Q5_K_M"].stat().st_size)
    assert reasons == [
        f"Q5_K_M ({size}) is the largest that fits {target.describe()} "
        f"(needs {need(files['Q5_K_M']) / 2**20:.1f} MiB)"
    ]
    smaller = between(files, "Q4_K_M", "Q5_K_M")
    assert pull(REPO, store, fit=smaller).name == f"{REPO}:Q4_K_M"


def test_quant_overrides_the_fit(files: dict[str, Path], store: ModelStore) -> None:
    reasons: list[str] = []
    target = between(files, "Q4_K_M", "Q5_K_M")
    model = pull(REPO, store, quant="q8_0", fit=target, explain=reasons.append)
    assert model.name == f"{REPO}:Q8_0" and reasons == []
    assert pull(f"{REPO}:Q5_K_M", store, fit=target).name == f"{REPO}:Q5_K_M"  # a tag too


def test_a_quant_that_does_not_exist_lists_those_that_do(
    files: dict[str, Path], store: ModelStore
) -> None:
    with pytest.raises(PullError, match=r"has no Q6_K file; available: Q4_K_M, Q5_K_M, Q8_0"):
        pull(REPO, store, quant="Q6_K")


def test_nothing_fits_is_a_clear_error(files: dict[str, Path], store: ModelStore) -> None:
    with pytest.raises(PullError, match=rf"no quantization of {REPO} fits 1.0 MiB of RAM"):
        pull(REPO, store, fit=FitTarget(2**20, "RAM", CTX, SLOTS))
    assert f"{REPO}:Q4_K_M" not in store


def test_library_style_names_get_hub_suggestions(files: dict[str, Path]) -> None:
    assert suggestions("tiny") == ["other/tiny-chat-GGUF", REPO]
    assert suggestions("tiny:8b") == [REPO, "other/tiny-chat-GGUF"]  # the tag's match first
    message = library_name_message("tiny:8b")
    assert message is not None
    assert f"did you mean {REPO}, other/tiny-chat-GGUF?" in message
    assert "no GGUF repository" in (library_name_message("llama3.2") or "")
    assert library_name_message("acme/repo") is None  # a repository reference is not one


def test_an_unreachable_hub_is_hub_unreachable(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(HubUnreachable, match=rf"cannot reach the Hugging Face Hub at {endpoint}"):
        search("tiny", FitTarget(10**9, "RAM", CTX, SLOTS))
    with pytest.raises(HubUnreachable, match=rf"cannot reach the Hugging Face Hub at {endpoint}"):
        pull(REPO, store)
    assert suggestions("llama3.2") == []


def test_a_failing_hub_is_hub_unreachable(
    files: dict[str, Path], fake_hub: FakeHub, store: ModelStore
) -> None:
    fake_hub.failing = 503
    with pytest.raises(HubUnreachable, match=r"failed to search \(503\)"):
        search("tiny", FitTarget(10**9, "RAM", CTX, SLOTS))
    with pytest.raises(HubUnreachable, match=rf"failed to list {REPO} \(503\)"):
        pull(REPO, store)


def test_a_connection_reset_mid_download_is_hub_unreachable(
    files: dict[str, Path], fake_hub: FakeHub, store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hearth.models import pull as pull_module

    monkeypatch.setattr(pull_module, "RETRY_DELAY", 0.0)
    name = files["Q4_K_M"].name
    fake_hub.cut_after[name] = 100
    fake_hub.cuts[name] = 10
    with pytest.raises(HubUnreachable, match=rf"the download of {name} was interrupted"):
        pull(f"{REPO}:Q4_K_M", store)
