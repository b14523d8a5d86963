"""`quantize`: a stored model through the real llama-quantize into a new stored model, with the
type really written, per-tensor progress, requantizing only when asked, and nothing left behind
by a failure or an interrupt. (Serving the results: tests/cli/test_convert_cli.py.)"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType, LlamaFileType

from hearth.errors import ModelNotFound, ModelStoreError
from hearth.models.gguf_info import read_gguf_header, read_gguf_info
from hearth.models.quantize import (
    already_quantized,
    canonical_type,
    default_name,
    quantization_types,
    quantize,
)
from hearth.models.store import ModelStore

Q6_K = GGMLQuantizationType.Q6_K
TENSORS = 21  # the tiny Llama's: 2 layers x 9, embeddings, output and its norm


@pytest.fixture
def store(tmp_path: Path, tiny_f16_gguf: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    store.import_file(tiny_f16_gguf, name="tiny:F16")
    return store


def leftovers(store: ModelStore) -> list[Path]:
    """Files (and staging folders) under quantized/: none once a run failed or was stopped."""
    folder = store.models_dir / "quantized"
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_the_types_are_those_the_binary_lists(quantize_binary: Path) -> None:
    types = quantization_types(quantize_binary)
    assert {"Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS", "F16"} <= set(types)
    assert "COPY" not in types  # copies, does not quantize
    assert "ppl @ Llama-3-8B" in types["Q4_K_M"]  # its own description
    assert canonical_type("q4_k_m", types) == "Q4_K_M"
    assert canonical_type(" Q8_0 ", types) == "Q8_0"
    with pytest.raises(ModelStoreError, match=r"'Q4_K_X' is not a quantization type.*Q4_K_M"):
        canonical_type("Q4_K_X", types)


@pytest.mark.parametrize(
    ("asked", "file_type", "weight_types"),
    [
        ("Q8_0", LlamaFileType.MOSTLY_Q8_0, {GGMLQuantizationType.Q8_0}),
        # Q4_K_M keeps some matrices (the output, half the ffn_down / attn_v) in Q6_K.
        ("q4_k_m", LlamaFileType.MOSTLY_Q4_K_M, {GGMLQuantizationType.Q4_K, Q6_K}),
    ],
)  # fmt: skip
def test_quantizes_into_a_new_stored_model(
    store: ModelStore,
    quantize_binary: Path,
    asked: str,
    file_type: LlamaFileType,
    weight_types: set[GGMLQuantizationType],
) -> None:
    seen: list[tuple[int, int, str]] = []
    model = quantize(store, "tiny:F16", asked, quantize_binary, progress=lambda *a: seen.append(a))
    qtype = asked.upper()
    assert model.name == f"tiny:{qtype}"
    assert store.get(model.name) == model
    assert model.kind == "quantized"
    assert model.source == f"tiny:F16 (F16 → {qtype})"
    assert model.path == store.models_dir / "quantized" / f"tiny%3A{qtype}" / f"tiny-{qtype}.gguf"
    assert model.size == model.path.stat().st_size < store.get("tiny:F16").path.stat().st_size
    # The file says it is what was asked: its file type, and the type of each weight matrix.
    header = read_gguf_header(model.path)
    assert header.metadata["general.file_type"] == file_type
    matrices = {t.type for t in header.tensors if len(t.shape) >= 2}
    assert matrices == {int(t) for t in weight_types}
    assert read_gguf_info(model.path).quantization == qtype
    # One progress call per tensor, in order.
    assert [(i, n) for i, n, _ in seen] == [(i, TENSORS) for i in range(1, TENSORS + 1)]
    assert "token_embd.weight" in {name for *_, name in seen}
    assert [p.name for p in leftovers(store)] == [model.path.parent.name, model.path.name]
    # The original is untouched.
    assert store.get("tiny:F16").kind == "imported"


def test_another_name(store: ModelStore, quantize_binary: Path) -> None:
    model = quantize(store, "tiny:F16", "Q6_K", quantize_binary, new_name="small")
    assert model.name == "small"
    assert model.path.name == "small.gguf"
    assert read_gguf_info(model.path).quantization == "Q6_K"
    store.remove("small")  # deletes the file Hearth made, and its folder
    assert not model.path.parent.exists()
    assert store.get("tiny:F16").path.is_file()


def test_requantizing_needs_allow_requantize(store: ModelStore, quantize_binary: Path) -> None:
    quantize(store, "tiny:F16", "Q4_K_M", quantize_binary)
    assert already_quantized(store.get("tiny:Q4_K_M").path) == ["Q4_K", "Q6_K"]
    assert already_quantized(store.get("tiny:F16").path) == []
    with pytest.raises(ModelStoreError, match=r"quantized already.*--allow-requantize"):
        quantize(store, "tiny:Q4_K_M", "Q2_K", quantize_binary)
    assert "tiny:Q2_K" not in store
    model = quantize(store, "tiny:Q4_K_M", "Q2_K", quantize_binary, allow_requantize=True)
    assert model.source == "tiny:Q4_K_M (Q4_K_M → Q2_K)"
    assert read_gguf_info(model.path).quantization == "Q2_K"


def test_an_interrupt_leaves_nothing(store: ModelStore, quantize_binary: Path) -> None:
    """Ctrl-C arrives as KeyboardInterrupt while llama-quantize runs: it is stopped, its output
    deleted, nothing registered."""

    def interrupt(index: int, count: int, tensor: str) -> None:
        if index == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize(store, "tiny:F16", "Q8_0", quantize_binary, progress=interrupt)
    assert "tiny:Q8_0" not in store
    assert leftovers(store) == []
    assert not _running(str(store.models_dir))  # llama-quantize, writing under it, has ended


def test_a_type_that_needs_an_importance_matrix(store: ModelStore, quantize_binary: Path) -> None:
    with pytest.raises(ModelStoreError, match=r"IQ2_XXS needs an importance matrix.*--imatrix"):
        quantize(store, "tiny:F16", "iq2_xxs", quantize_binary)
    assert "tiny:IQ2_XXS" not in store
    assert leftovers(store) == []


def test_an_importance_matrix_is_used(
    store: ModelStore, quantize_binary: Path, tmp_path: Path
) -> None:
    """With --imatrix (here a flat one in llama-imatrix's legacy format: every column equally
    important) the low-bit type that refused above is made, and the source says so."""
    imatrix = write_flat_imatrix(store.get("tiny:F16").path, tmp_path / "flat.imatrix")
    model = quantize(store, "tiny:F16", "IQ2_XXS", quantize_binary, imatrix=imatrix)
    assert model.source == "tiny:F16 (F16 → IQ2_XXS, importance matrix flat.imatrix)"
    matrices = {t.type for t in read_gguf_header(model.path).tensors if len(t.shape) >= 2}
    assert GGMLQuantizationType.IQ2_XXS in matrices


def write_flat_imatrix(model: Path, path: Path) -> Path:
    """An importance matrix of ones for every weight matrix of `model`: per tensor its name, a
    call count and one value per input column (llama.cpp's legacy imatrix file)."""
    matrices = [t for t in read_gguf_header(model).tensors if len(t.shape) >= 2]
    data = struct.pack("<i", len(matrices))
    for tensor in matrices:
        name = tensor.name.encode()
        columns = tensor.shape[0]
        data += struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, columns)
        data += struct.pack(f"<{columns}f", *([1.0] * columns))
    path.write_bytes(data)
    return path


def test_refusals_before_anything_runs(
    store: ModelStore, quantize_binary: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelStoreError, match="'Q9_K' is not a quantization type"):
        quantize(store, "tiny:F16", "Q9_K", quantize_binary)
    with pytest.raises(ModelNotFound):
        quantize(store, "nothing", "Q8_0", quantize_binary)
    quantize(store, "tiny:F16", "Q8_0", quantize_binary)
    with pytest.raises(ModelStoreError, match=r"'tiny:Q8_0' already exists.*--name"):
        quantize(store, "tiny:F16", "q8_0", quantize_binary)
    with pytest.raises(ModelStoreError, match="cannot name a model"):
        quantize(store, "tiny:F16", "Q8_0", quantize_binary, new_name="bad name")
    with pytest.raises(ModelStoreError, match=r"importance matrix .* does not exist"):
        quantize(store, "tiny:F16", "Q6_K", quantize_binary, imatrix=tmp_path / "none.dat")
    assert [m.name for m in store.list()][1:] == ["tiny:F16", "tiny:Q8_0"]


def test_a_broken_source_file(store: ModelStore, quantize_binary: Path) -> None:
    """llama-quantize's own failure is reported with its reason; nothing is registered."""
    path = store.get("tiny:F16").path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short
    with pytest.raises(ModelStoreError, match=r"llama-quantize failed on tiny:F16 → Q8_0"):
        quantize(store, "tiny:F16", "Q8_0", quantize_binary)
    assert "tiny:Q8_0" not in store
    assert leftovers(store) == []


def test_abandoned_staging_folders_are_removed(store: ModelStore, quantize_binary: Path) -> None:
    """A run killed outright (SIGKILL) cannot clean up; the next run removes what it left."""
    dead = _dead_pid()
    abandoned = store.models_dir / "quantized" / f".staging-{dead}-x"
    abandoned.mkdir(parents=True)
    (abandoned / "model.gguf").write_bytes(b"half")
    mine = store.models_dir / "quantized" / f".staging-{os.getpid()}-y"  # a live process's
    mine.mkdir()
    quantize(store, "tiny:F16", "Q8_0", quantize_binary)
    assert not abandoned.exists()
    assert mine.is_dir()


def test_default_names() -> None:
    assert default_name("tiny:F16", "Q4_K_M") == "tiny:Q4_K_M"
    assert default_name("tiny", "Q8_0") == "tiny:Q8_0"
    assert default_name("acme/Tiny-GGUF:BF16", "Q6_K") == "acme/Tiny-GGUF:Q6_K"
    assert default_name("acme/Tiny-GGUF:Q8_0@0123abc", "Q4_0") == "acme/Tiny-GGUF:Q4_0"


def _running(needle: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes().decode(errors="replace"):
                return True
        except OSError:
            continue
    return False


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
