"""Reading GGUF metadata: the bundled model, tiny files written with gguf's own writer, and
the memory estimate built on it."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from hearth.errors import ModelStoreError
from hearth.models.bundled import bundled_model_path
from hearth.models.gguf_info import (
    COMPUTE_BASE_BYTES,
    estimate_memory,
    memory_breakdown,
    read_gguf_info,
)
from support.gguf_files import write_gguf


def test_the_bundled_model(bundled_model_dir: Path) -> None:
    info = read_gguf_info(bundled_model_path(bundled_model_dir))
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M"
    assert info.context_length == 32768
    assert info.chat_template is None and not info.has_chat_template
    assert 260_000_000 < (info.parameter_count or 0) < 280_000_000
    assert (info.block_count, info.embedding_length) == (18, 640)
    assert (info.head_count, info.head_count_kv) == (4, 1)
    assert (info.key_length, info.value_length) == (256, 256)
    assert info.vocab_size == 262144
    assert info.capabilities == ("completion",)


def test_memory_estimate_follows_the_documented_formula(bundled_model_dir: Path) -> None:
    path = bundled_model_path(bundled_model_dir)
    info = read_gguf_info(path)
    size = path.stat().st_size
    kv = 18 * 16384 * 1 * (256 + 256) * 2
    compute = COMPUTE_BASE_BYTES + 262144 * 4 * 8
    assert estimate_memory(info, size, 16384, 8) == size + kv + compute
    # Slots share the context: more of them add logits rows, not KV cache.
    one, eight = (memory_breakdown(info, size, 16384, n) for n in (1, 8))
    assert one.kv_cache == eight.kv_cache and eight.compute > one.compute
    assert estimate_memory(info, size, 32768, 8) - estimate_memory(info, size, 16384, 8) == kv


def test_a_chat_model_with_a_template(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "chat.gguf", chat_template="{{ messages }}")
    info = read_gguf_info(path)
    assert info.capabilities == ("completion", "chat")
    assert info.chat_template == "{{ messages }}"
    assert info.quantization == "F16"
    assert info.parameter_count == 100 * 8  # counted from the tensor shapes
    assert info.vocab_size == 100


def test_a_bert_embedding_model_needs_no_kv_cache(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "embed.gguf", "bert", pooling_type=gguf.PoolingType.CLS)
    info = read_gguf_info(path)
    assert info.capabilities == ("embeddings",)
    assert info.pooling_type == "cls"
    assert memory_breakdown(info, 1000, 8192, 4).kv_cache == 0


def test_a_decoder_with_pooling_is_an_embedding_model(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "qwen3-embed.gguf", "qwen3", pooling_type=gguf.PoolingType.LAST)
    assert read_gguf_info(path).capabilities == ("embeddings",)


def test_a_reranker_is_detected_from_its_pooling_type(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "whatever.gguf",  # the name says nothing: metadata decides
        "bert",
        pooling_type=gguf.PoolingType.RANK,
        tensors={"token_embd.weight": (100, 8), "cls.output.weight": (8, 1)},
    )
    assert read_gguf_info(path).capabilities == ("rerank",)


def test_names_do_not_decide_capabilities(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "bge-reranker-embedding.gguf")
    assert read_gguf_info(path).capabilities == ("completion",)


def test_missing_fields_fall_back_like_llama_cpp(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", head_count_kv=None, embedding_length=64, head_count=4)
    info = read_gguf_info(path)
    # kv heads = heads (4); key = value = 64 / 4 = 16
    assert memory_breakdown(info, 0, 1000, 1).kv_cache == 2 * 1000 * 4 * (16 + 16) * 2
    bare = read_gguf_info(
        write_gguf(
            tmp_path / "bare.gguf",
            context_length=None,
            block_count=None,
            embedding_length=None,
            head_count=None,
            head_count_kv=None,
            file_type=None,
        )
    )
    assert bare.context_length is None
    assert memory_breakdown(bare, 10, 1000, 1).kv_cache == 0
    assert bare.quantization == "F16"  # from the tensors when general.file_type is absent


def test_parameter_count_from_metadata_wins(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", extra={"general.parameter_count": 7_000_000})
    assert read_gguf_info(path).parameter_count == 7_000_000


def test_a_split_model_counts_the_parameters_of_every_part(tmp_path: Path) -> None:
    for index, rows in ((1, 100), (2, 50)):
        write_gguf(
            tmp_path / f"big-{index:05d}-of-00002.gguf",
            tensors={f"blk.{index}.weight": (rows, 8)},
            extra={"split.count": 2},
        )
    info = read_gguf_info(tmp_path / "big-00001-of-00002.gguf")
    assert info.split_count == 2
    assert info.parameter_count == (100 + 50) * 8


def test_not_a_gguf_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelStoreError, match="not a GGUF file"):
        read_gguf_info(path)


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:200])
    with pytest.raises(ModelStoreError, match="truncated or corrupt"):
        read_gguf_info(cut)
