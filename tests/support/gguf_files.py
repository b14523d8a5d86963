"""Tiny but real GGUF files for tests, written with the `gguf` package's own writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np


def write_gguf(
    path: Path,
    arch: str = "llama",
    *,
    context_length: int | None = 4096,
    block_count: int | None = 2,
    embedding_length: int | None = 64,
    head_count: int | None = 4,
    head_count_kv: int | None = 2,
    file_type: int | None = int(gguf.LlamaFileType.MOSTLY_F16),
    chat_template: str | None = None,
    pooling_type: int | None = None,
    vocab: int = 100,
    tensors: dict[str, tuple[int, ...]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a GGUF with the given metadata and small zero tensors; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny {arch}")
    writer.add_type("model")
    if context_length is not None:
        writer.add_context_length(context_length)
    if block_count is not None:
        writer.add_block_count(block_count)
    if embedding_length is not None:
        writer.add_embedding_length(embedding_length)
    if head_count is not None:
        writer.add_head_count(head_count)
    if head_count_kv is not None:
        writer.add_head_count_kv(head_count_kv)
    if file_type is not None:
        writer.add_file_type(file_type)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if pooling_type is not None:
        writer.add_pooling_type(gguf.PoolingType(pooling_type))
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    for key, value in (extra or {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, value)
    shapes = tensors if tensors is not None else {"token_embd.weight": (vocab, 8)}
    for name, shape in shapes.items():
        writer.add_tensor(name, np.zeros(shape, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
