"""Stored models quantized with llama.cpp's `llama-quantize` (built from the pinned tree, cached
beside llama-server), the result registered as a new stored model.

The types offered are read from the binary itself: `llama-quantize --help` lists them (the
`allowed quantization types` table), so Hearth offers exactly what the built tree can do.
Already quantized weights are requantized only when asked (`allow_requantize`): quantizing
quantized weights again loses more quality than quantizing the 16- or 32-bit original.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from gguf import GGMLQuantizationType

from hearth.errors import ModelStoreError, SetupError
from hearth.models.derived import register_derived, staging
from hearth.models.gguf_info import read_gguf_header, read_gguf_info
from hearth.models.store import ModelStore, StoredModel, validate_name
from hearth.models.tool_run import run_tool

# (tensor number, tensor count, tensor name), once per tensor as llama-quantize reaches it.
QuantizeProgress = Callable[[int, int, str], None]

# Weights in these types are not quantized: quantizing them needs no --allow-requantize.
_FLOAT_TYPES = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
# `  15  or  Q4_K_M  :  4.58G, +0.1754 ppl @ Llama-3-8B` in the help's table; COPY (no
# quantizing) has no number and is left out.
_TYPE_ROW = re.compile(r"^\s*\d+\s+or\s+(?P<name>[A-Z0-9_]+)\s*:\s*(?P<description>.*?)\s*$")
_TENSOR = re.compile(r"^\[\s*(?P<index>\d+)/\s*(?P<count>\d+)\]\s+(?P<name>\S+)")
_NEEDS_IMATRIX = re.compile(r"requires an (?:imatrix|importance matrix)|Missing importance matrix")
_OFFENDING = re.compile(r"(?:offending tensor:|importance matrix for tensor) (?P<tensor>\S+)")
_REQUANTIZE = re.compile(r"requantizing from type (?P<type>\S+) is disabled")
_FAILED = re.compile(r"failed to quantize: (?P<message>.+)$")


def quantization_types(binary: Path) -> dict[str, str]:
    """The types `binary` (llama-quantize) offers, name → its own description, in its order."""
    try:
        result = subprocess.run(
            [str(binary), "--help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"cannot run {binary} --help: {exc}") from None
    types = {}
    for line in (result.stdout + result.stderr).splitlines():
        if match := _TYPE_ROW.match(line):
            types[match["name"]] = match["description"]
    if not types:
        raise SetupError(
            f"{binary} --help listed no quantization types; rebuild it with `hearth setup "
            "--force-build`"
        )
    return types


def canonical_type(requested: str, types: dict[str, str]) -> str:
    """`requested` as llama-quantize names it (case does not matter); an error listing the
    types if it offers none such."""
    by_upper = {name.upper(): name for name in types}
    found = by_upper.get(requested.strip().upper())
    if found is None:
        raise ModelStoreError(
            f"{requested!r} is not a quantization type llama-quantize offers; choose one of "
            f"{', '.join(types)} (`hearth quantize --list-types` describes them)"
        )
    return found


def default_name(name: str, qtype: str) -> str:
    """`owner/repo:Q8_0` → `owner/repo:Q4_K_M`; `tiny` → `tiny:Q4_K_M`: the tag names the
    quantization, as a pulled model's does."""
    base = name.split("@", 1)[0].rsplit(":", 1)[0]  # NAME@REV names a revision of NAME
    return f"{base}:{qtype}"


def quantize(
    store: ModelStore,
    name: str,
    qtype: str,
    binary: Path,
    *,
    new_name: str | None = None,
    imatrix: Path | None = None,
    allow_requantize: bool = False,
    progress: QuantizeProgress | None = None,
) -> StoredModel:
    """Quantize the stored model `name` to `qtype` with `binary` (llama-quantize) and register
    the result as `new_name` (default: see `default_name`). Nothing is registered, and no file
    is left, unless llama-quantize finishes."""
    source = store.get(name)
    if not source.available and source.kind == "bundled":
        raise ModelStoreError(f"{name} is not prepared yet; run `hearth setup` first")
    if not source.available:
        raise ModelStoreError(
            f"{name}'s file {source.path} is missing; put it back, or `hearth rm {name}` and pull "
            "or import it again"
        )
    qtype = canonical_type(qtype, quantization_types(binary))
    target_name = validate_name(new_name or default_name(source.name, qtype))
    store.check_name_free(target_name)
    if imatrix is not None and not imatrix.is_file():
        raise ModelStoreError(f"the importance matrix {imatrix} does not exist or is not a file")
    was = read_gguf_info(source.path).quantization or "?"
    quantized = already_quantized(source.path)
    if quantized and not allow_requantize:
        raise ModelStoreError(
            f"{name} is quantized already ({was}: {', '.join(quantized)} weights); quantizing "
            "it again loses more quality than quantizing the F16/BF16/F32 original (convert "
            "that with `hearth convert`). To requantize anyway, pass --allow-requantize"
        )
    flags = ["--allow-requantize"] if allow_requantize else []
    if imatrix is not None:
        flags += ["--imatrix", str(imatrix.resolve())]
    with staging(store, "quantized") as work:
        out = work / "model.gguf"
        output = _QuantizeOutput(progress)
        result = run_tool([str(binary), *flags, str(source.path), str(out), qtype], output.line)
        if result.returncode != 0 or not out.is_file():
            raise output.failure(name, qtype, result.returncode, result.tail)
        how = f"{was} → {qtype}" + (f", importance matrix {imatrix.name}" if imatrix else "")
        return register_derived(
            store, out, name=target_name, kind="quantized", source=f"{name} ({how})"
        )


def already_quantized(path: Path) -> list[str]:
    """The quantized types among a GGUF's weight matrices (empty: all are F32, F16 or BF16)."""
    types = {t.type for t in read_gguf_header(path).tensors if len(t.shape) >= 2}
    names = []
    for kind in sorted(types - {int(t) for t in _FLOAT_TYPES}):
        try:
            names.append(GGMLQuantizationType(kind).name)
        except ValueError:
            names.append(f"type {kind}")
    return names


class _QuantizeOutput:
    """Reads llama-quantize's log: a line per tensor (`[  3/ 21] blk.0.attn_q.weight …`), and
    why it failed."""

    def __init__(self, progress: QuantizeProgress | None) -> None:
        self.progress = progress
        self.needs_imatrix = False
        self.tensor: str | None = None  # the one it stopped at
        self.requantize: str | None = None
        self.error: str | None = None

    def line(self, line: str) -> None:
        # A tensor's line is ended by what is done with it, an error included.
        if match := _TENSOR.match(line):
            self.tensor = match["name"]
            if self.progress is not None:
                self.progress(int(match["index"]), int(match["count"]), match["name"])
        if _NEEDS_IMATRIX.search(line):
            self.needs_imatrix = True
        if match := _OFFENDING.search(line):
            self.tensor = match["tensor"]
        if match := _REQUANTIZE.search(line):
            self.requantize = match["type"]
        if (match := _FAILED.search(line)) and self.error is None:
            self.error = match["message"]

    def failure(self, name: str, qtype: str, code: int, tail: tuple[str, ...]) -> Exception:
        if self.needs_imatrix:
            return ModelStoreError(
                f"{qtype} needs an importance matrix (llama-quantize refuses to quantize "
                f"{self.tensor or 'the weights'} without one: the result would be unusable); "
                "compute one with llama.cpp's llama-imatrix on text like what the model will "
                "see and pass --imatrix FILE, or choose a type such as Q4_K_M"
            )
        if self.requantize is not None:
            return ModelStoreError(
                f"{name} has {self.requantize} weights, quantized already; pass "
                "--allow-requantize to quantize them again (quality suffers)"
            )
        why = self.error or (tail[-1] if tail else "no output")
        return ModelStoreError(f"llama-quantize failed on {name} → {qtype} (exit {code}): {why}")
