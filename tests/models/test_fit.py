"""Which quantization fits: the scheduler's memory estimate per choice against the target, the
largest that fits, and the target chosen from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.config import Settings
from hearth.errors import PullError
from hearth.models.fit import FitTarget, assess, fit_target, pick
from hearth.models.gguf_info import COMPUTE_BASE_BYTES, estimate_memory, read_gguf_info
from hearth.models.hub_ref import Choice, HubFile
from support.gguf_files import write_gguf

GB = 10**9


def choice(tag: str, size: int) -> Choice:
    return Choice(tag, (HubFile(f"m-{tag}.gguf", size, None, None),))


CHOICES = [choice("Q8_0", 8 * GB), choice("Q4_K_M", 4 * GB), choice("Q5_K_M", 5 * GB)]


def test_the_need_is_the_schedulers_estimate(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", block_count=32, head_count_kv=8))
    target = FitTarget(100 * GB, "RAM", 16384, 8)
    fits = assess(CHOICES, info, target)
    assert [f.choice.tag for f in fits] == ["Q4_K_M", "Q5_K_M", "Q8_0"]  # smallest first
    for fit in fits:
        assert fit.need == estimate_memory(info, fit.size, 16384, 8)
        assert fit.need > fit.size  # the KV cache and compute buffer count
    # The KV cache grows with the context.
    longer = assess(CHOICES, info, FitTarget(100 * GB, "RAM", 32768, 8))
    assert longer[0].need > fits[0].need


def test_without_the_header_the_need_is_the_weights_and_compute() -> None:
    fits = assess(CHOICES, None, FitTarget(100 * GB, "RAM", 16384, 8))
    assert [f.need for f in fits] == [s * GB + COMPUTE_BASE_BYTES for s in (4, 5, 8)]


def test_the_largest_that_fits_is_picked_and_the_reason_given() -> None:
    target = FitTarget(int(6 * GB), "RAM", 4096, 2)
    chosen, reason = pick("acme/m-GGUF", CHOICES, None, target)
    assert chosen.tag == "Q5_K_M"
    assert reason.startswith("Q5_K_M (5.0 GB) is the largest that fits 5.6 GiB of RAM at ctx 4096")
    assert "x 2 slots" in reason and "weights only" in reason
    chosen, _ = pick("acme/m-GGUF", CHOICES, None, FitTarget(9 * GB, "VRAM", 4096, 2))
    assert chosen.tag == "Q8_0"


def test_nothing_fits_names_the_smallest_and_what_to_do() -> None:
    with pytest.raises(PullError, match=r"no quantization of acme/m-GGUF fits .*Q4_K_M.*--quant"):
        pick("acme/m-GGUF", CHOICES, None, FitTarget(GB, "RAM", 4096, 2))


def test_the_target_follows_the_settings() -> None:
    budget = Settings(memory_budget="12GiB")  # type: ignore[arg-type]
    assert fit_target(budget, vram=8 * GB).where == "the memory budget"  # explicit wins
    assert fit_target(budget, vram=None).budget == 12 * 1024**3
    assert fit_target(Settings(), vram=8 * GB) == FitTarget(8 * GB, "VRAM", 16384, 8)
    ram = fit_target(Settings(), vram=None)
    assert ram.where == "RAM" and ram.budget == Settings().effective_memory_budget()
