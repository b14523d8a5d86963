"""What a GGUF file says about its model (architecture, size, quantization, context, template,
capabilities), and how much memory serving it takes.

The header is parsed here rather than with `gguf.GGUFReader`, which decodes every tokenizer
array element into Python objects (about 20 s for a 262k-token vocabulary on a small CPU); the
`gguf` package still supplies the format's constants. Capabilities come from metadata only,
never from file names.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, GGUFValueType, LlamaFileType, PoolingType

from hearth.errors import ModelStoreError

GGUF_MAGIC = b"GGUF"
SPLIT_PATTERN = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")

# Architectures llama.cpp runs as encoders: they embed (or rank), they do not generate, and
# they keep no KV cache between requests.
ENCODER_ARCHITECTURES = frozenset(
    {
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "jina-bert-v2",
        "jina-bert-v3",
        "neo-bert",
        "modern-bert",
        "eurobert",
        "t5encoder",
    }
)

MIB = 1024 * 1024
COMPUTE_BASE_BYTES = 64 * MIB
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is f16

_SCALARS: dict[int, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_KEEP_ARRAY_ITEMS = 64  # longer arrays (vocabularies, merges) are skipped; their length is kept


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: int

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class GGUFHeader:
    """The raw key/value metadata and tensor descriptions of one GGUF file."""

    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[TensorInfo]


@dataclass(frozen=True)
class GGUFInfo:
    """The facts about a model that Hearth shows and schedules by."""

    path: Path
    architecture: str | None
    name: str | None
    general_type: str | None
    parameter_count: int | None
    quantization: str | None
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None
    value_length: int | None
    vocab_size: int | None
    pooling_type: str | None
    chat_template: str | None
    split_count: int
    capabilities: tuple[str, ...] = field(default=())

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    @property
    def is_encoder(self) -> bool:
        return self.architecture in ENCODER_ARCHITECTURES


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse the header of a GGUF file; `ModelStoreError` if it is not one or is truncated."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                raise ModelStoreError(
                    f"{path} is not a GGUF file (it does not start with 'GGUF'); Hearth serves "
                    "GGUF models — convert it with llama.cpp's convert_hf_to_gguf.py"
                )
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return _Parser(view, path).header()
    except OSError as exc:
        raise ModelStoreError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read a model's facts. For a split GGUF pass the first part; the others are read from the
    same folder to count parameters when the metadata does not state the count."""
    header = read_gguf_header(path)
    meta = header.metadata
    arch = _str(meta.get("general.architecture"))

    def arch_int(key: str) -> int | None:
        return _int(meta.get(f"{arch}.{key}")) if arch else None

    split_count = _int(meta.get("split.count")) or 1
    parameters = _int(meta.get("general.parameter_count"))
    if parameters is None:
        tensors = list(header.tensors)
        for part in _other_parts(path, split_count):
            tensors += read_gguf_header(part).tensors
        parameters = sum(t.n_elements for t in tensors) or None

    head_count = arch_int("attention.head_count")
    pooling = arch_int("pooling_type")
    info = GGUFInfo(
        path=path,
        architecture=arch,
        name=_str(meta.get("general.name")),
        general_type=_str(meta.get("general.type")),
        parameter_count=parameters,
        quantization=_quantization(meta, header.tensors),
        context_length=arch_int("context_length"),
        block_count=arch_int("block_count"),
        embedding_length=arch_int("embedding_length"),
        head_count=head_count,
        head_count_kv=arch_int("attention.head_count_kv"),
        key_length=arch_int("attention.key_length"),
        value_length=arch_int("attention.value_length"),
        vocab_size=header.array_lengths.get("tokenizer.ggml.tokens"),
        pooling_type=_pooling_name(pooling),
        chat_template=_str(meta.get("tokenizer.chat_template")),
        split_count=split_count,
    )
    return _with_capabilities(info, pooling, header)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    compute: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute


def estimate_memory(info: GGUFInfo, file_size: int, ctx_size: int, parallel: int) -> int:
    """Bytes needed to serve the model with llama-server at `ctx_size` tokens and `parallel` slots.

        weights  = file_size (every part of a split model)
        kv_cache = n_layers * ctx_size * n_kv_heads * (key_length + value_length) * 2 bytes (f16)
        compute  = 64 MiB + n_vocab * 4 bytes * parallel (one row of logits per slot)

    `ctx_size` is the total shared by all slots (as Hearth passes it to llama-server), so slots
    do not multiply the KV cache. Missing fields fall back the way llama.cpp does: n_kv_heads =
    n_heads, key/value length = embedding_length / n_heads; with no layer or head information the
    KV cache counts as 0. Encoders (BERT family) keep no KV cache. For sliding-window models
    (Gemma 3) llama.cpp keeps a smaller cache for the windowed layers, so this is an upper bound.
    """
    return memory_breakdown(info, file_size, ctx_size, parallel).total


def memory_breakdown(
    info: GGUFInfo, file_size: int, ctx_size: int, parallel: int
) -> MemoryEstimate:
    """The parts of `estimate_memory`, for display."""
    kv_cache = 0
    if not info.is_encoder and info.block_count:
        heads = info.head_count or 0
        kv_heads = info.head_count_kv or heads
        per_head = info.embedding_length // heads if heads and info.embedding_length else 0
        key_length = info.key_length or per_head
        value_length = info.value_length or per_head
        kv_cache = (
            info.block_count
            * ctx_size
            * kv_heads
            * (key_length + value_length)
            * KV_BYTES_PER_VALUE
        )
    compute = COMPUTE_BASE_BYTES + (info.vocab_size or 0) * 4 * max(parallel, 1)
    return MemoryEstimate(file_size, kv_cache, compute)


def split_parts(first: Path) -> list[Path]:
    """All parts of a split GGUF named `<stem>-00001-of-0000N.gguf` (just [first] otherwise)."""
    match = SPLIT_PATTERN.match(first.name)
    if match is None:
        return [first]
    stem, count = match["stem"], int(match["count"])
    return [first.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _other_parts(first: Path, split_count: int) -> list[Path]:
    if split_count <= 1:
        return []
    return [part for part in split_parts(first)[1:] if part.is_file()]


def _with_capabilities(info: GGUFInfo, pooling: int | None, header: GGUFHeader) -> GGUFInfo:
    capabilities: list[str] = []
    has_rank_head = any(t.name.startswith("cls.") for t in header.tensors)
    if pooling == PoolingType.RANK or (info.is_encoder and has_rank_head and pooling is None):
        capabilities.append("rerank")
    elif (pooling is not None and pooling != PoolingType.NONE) or info.is_encoder:
        capabilities.append("embeddings")
    else:
        capabilities.append("completion")
        if info.has_chat_template:
            capabilities.append("chat")
    return GGUFInfo(**{**info.__dict__, "capabilities": tuple(capabilities)})


def _quantization(meta: dict[str, Any], tensors: list[TensorInfo]) -> str | None:
    file_type = _int(meta.get("general.file_type"))
    if file_type is not None:
        try:
            name = LlamaFileType(file_type).name
        except ValueError:
            return f"file type {file_type}"
        return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    # No file type recorded: name the type most of the matrices use.
    counts = Counter(t.type for t in tensors if len(t.shape) >= 2)
    if not counts:
        return None
    common = counts.most_common(1)[0][0]
    try:
        return GGMLQuantizationType(common).name
    except ValueError:
        return f"type {common}"


def _pooling_name(value: int | None) -> str | None:
    if value is None:
        return None
    try:
        return PoolingType(value).name.lower()
    except ValueError:
        return str(value)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class _Parser:
    """A cursor over the mapped file; the byte order is detected from the version field."""

    def __init__(self, view: mmap.mmap, path: Path) -> None:
        self.view = view
        self.path = path
        self.offset = 4
        self.order = "<"

    def header(self) -> GGUFHeader:
        try:
            version = self._unpack("I")
            if version & 0xFFFF == 0:  # a big-endian file read as little-endian
                self.order = ">"
                version = struct.unpack(">I", struct.pack("<I", version))[0]
            tensor_count = self._unpack("Q")
            kv_count = self._unpack("Q")
            metadata: dict[str, Any] = {}
            lengths: dict[str, int] = {}
            for _ in range(kv_count):
                key = self._string()
                value_type = self._unpack("I")
                metadata[key] = self._value(value_type, key, lengths)
            tensors = [self._tensor() for _ in range(tensor_count)]
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise ModelStoreError(
                f"{self.path} is not a readable GGUF file (truncated or corrupt: {exc}); "
                "download or copy it again"
            ) from None
        return GGUFHeader(version, metadata, lengths, tensors)

    def _unpack(self, code: str) -> Any:
        fmt = self.order + code
        (value,) = struct.unpack_from(fmt, self.view, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        length = self._unpack("Q")
        end = self.offset + length
        if end > len(self.view):
            raise ValueError("string runs past the end of the file")
        text = bytes(self.view[self.offset : end]).decode("utf-8")
        self.offset = end
        return text

    def _skip_string(self) -> None:
        length = self._unpack("Q")  # read first: `offset += f()` would add to the stale offset
        self.offset += length

    def _value(self, value_type: int, key: str, lengths: dict[str, int]) -> Any:
        if value_type == GGUFValueType.STRING:
            return self._string()
        if value_type in _SCALARS:
            return self._unpack(_SCALARS[value_type])
        if value_type != GGUFValueType.ARRAY:
            raise ValueError(f"unknown value type {value_type} for key {key}")
        item_type = self._unpack("I")
        count = self._unpack("Q")
        lengths[key] = count
        if count <= _KEEP_ARRAY_ITEMS:
            return [self._value(item_type, key, lengths) for _ in range(count)]
        if item_type == GGUFValueType.STRING:
            for _ in range(count):
                self._skip_string()
        elif item_type in _SCALARS:
            self.offset += count * struct.calcsize(_SCALARS[item_type])
        else:
            for _ in range(count):
                self._value(item_type, key, lengths)
        lengths[key] = count
        return None

    def _tensor(self) -> TensorInfo:
        name = self._string()
        n_dims = self._unpack("I")
        shape = tuple(self._unpack("Q") for _ in range(n_dims))
        tensor_type = self._unpack("I")
        self._unpack("Q")  # data offset
        return TensorInfo(name, shape, tensor_type)


def parameter_size(count: int | None) -> str:
    """A parameter count as people write it ("268.1M", "7.2B"); empty when unknown."""
    if not count:
        return ""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)
