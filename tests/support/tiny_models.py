"""Tiny Hugging Face checkpoints with random weights, built in the tests (no hub here).

`make_tiny_llama` writes a two-layer Llama-style model folder (config.json, model.safetensors and
a SentencePiece tokenizer trained here on a few sentences) that llama.cpp's
`convert_hf_to_gguf.py` converts as it would a real checkpoint; `make_random_lora` writes a PEFT
LoRA adapter for it (adapter_config.json + adapter_model.safetensors) with non-zero B matrices, so
the adapter changes the answers; `make_tiny_gemma3_vlm` writes a Gemma-3-style vision-language
model that converts into a text model and a projector (`--mmproj`). The weights are noise, so only
what the engine does with them can be asserted (it loads, it answers, an adapter changes the
answer, an image adds its tokens to the prompt), never what the answer says.

All are deterministic for a given seed; tests build them once per session in their own fixtures,
since training the tokenizer and saving the model take a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

# Enough distinct text for a small SentencePiece vocabulary; the words are those the tests prompt
# with, so prompts tokenize into a few pieces each.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time there was a small model that lived on a laptop.",
    "Hello world, this is a tiny language model for tests.",
    "Paris is the capital of France and Rome is the capital of Italy.",
    "Count to ten: one two three four five six seven eight nine ten.",
    "Adapters change how a model answers without changing its weights.",
    "Quantization makes a model smaller and faster on a CPU.",
]
VOCAB_SIZE = 320
# 256 wide: llama.cpp's k-quants (Q4_K_M …) work on rows of 256, so every weight matrix is
# quantized as asked rather than with a fallback type. About 1.5 M parameters, 6 MB in f32.
HIDDEN_SIZE = 256
LAYERS = 2


def _train_tokenizer(folder: Path, *, symbols: list[str] | None = None, **ids: int) -> None:
    """A small byte-fallback BPE SentencePiece model, `tokenizer.model` in `folder`, with these
    special token ids and extra single-token symbols."""
    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(_CORPUS * 20) + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=VOCAB_SIZE,
        model_type="bpe",
        character_coverage=1.0,
        byte_fallback=True,
        user_defined_symbols=symbols or [],
        num_threads=1,
        minloglevel=2,
        **ids,
    )
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink()


def make_tiny_llama(folder: Path, *, seed: int = 0, hidden_size: int = HIDDEN_SIZE) -> Path:
    """A two-layer Llama with random weights and a SentencePiece tokenizer, saved in `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _train_tokenizer(folder, bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the init's: answers that vary with the input
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "model_max_length": 2048,
            }
        )
    )
    return folder


def make_random_lora(
    folder: Path, base: Path, *, rank: int = 4, seed: int = 1, scale: float = 1.0
) -> Path:
    """A PEFT LoRA adapter for the tiny Llama in `base`, on every attention projection, with
    random A and B (PEFT initialises B to zero, which would make an adapter that changes
    nothing)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((base / "config.json").read_text())
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_width = hidden // heads * config["num_key_value_heads"]
    widths = {"q_proj": hidden, "k_proj": kv_width, "v_proj": kv_width, "o_proj": hidden}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module, out_width in widths.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator)
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_width, rank, generator=generator)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": str(base),
                "r": rank,
                "lora_alpha": rank * scale,
                "lora_dropout": 0.0,
                "bias": "none",
                "fan_in_fan_out": False,
                "target_modules": list(widths),
            }
        )
    )
    return folder


# Gemma 3's image markers, which the projector's prompt format needs as single tokens.
IMAGE_TOKENS = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
TURN_TOKENS = ["<start_of_turn>", "<end_of_turn>"]
# 64x64 images in 8x8 patches, pooled to 16 image tokens: llama.cpp's own tiny Gemma 3 test
# layout (its converter writes the pooling factor when it is not the real model's 4).
IMAGE_SIZE = 64
IMAGE_TOKENS_PER_IMAGE = 16


def make_tiny_gemma3_vlm(folder: Path, *, seed: int = 0, processor: bool = False) -> Path:
    """A Gemma-3-style vision-language model with random weights (two text layers, one SigLIP
    layer), saved in the checkpoint layout llama.cpp's converter reads: `convert_hf_to_gguf.py`
    makes the text model, and with `--mmproj` the projector. transformers loads that layout too;
    `processor=True` also makes it a complete Gemma3Processor folder (chat template, image token
    names, processor config) for `AutoProcessor`, as the transformers worker serves it."""
    import sentencepiece
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    _train_tokenizer(
        folder, pad_id=0, eos_id=1, bos_id=2, unk_id=3, symbols=IMAGE_TOKENS + TURN_TOKENS
    )
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    begin, end, soft = (pieces.piece_to_id(token) for token in IMAGE_TOKENS)
    text = Gemma3TextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=2048,
        sliding_window=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=IMAGE_TOKENS_PER_IMAGE,
        boi_token_index=begin,
        eoi_token_index=end,
        image_token_index=soft,
    )
    config.architectures = ["Gemma3ForConditionalGeneration"]
    torch.manual_seed(seed)
    Gemma3ForConditionalGeneration(config).save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves the vision tower one level flatter than the released checkpoints
    # (and llama.cpp's converter) name it.
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    renamed = {
        name.replace("vision_tower.", "vision_tower.vision_model.", 1)
        if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model.")
        else name: tensor
        for name, tensor in tensors.items()
    }
    save_file(renamed, str(weights), metadata={"format": "pt"})
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Gemma3ImageProcessor",
                "image_seq_length": IMAGE_TOKENS_PER_IMAGE,
                "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "do_normalize": True,
                "do_resize": True,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
            }
        )
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "GemmaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "add_bos_token": True,
            }
        )
    )
    if processor:
        _complete_gemma3_processor(folder)
    return folder


# Gemma 3's own chat template, shortened: roles become user/model turns, an image part becomes
# <start_of_image>, which Gemma3Processor expands into the image's soft tokens.
GEMMA3_PROCESSOR_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def _complete_gemma3_processor(folder: Path) -> None:
    """What AutoProcessor needs besides the image processor's config: the image token names in
    the tokenizer config, the processor's class and image token count, and a chat template (in
    chat_template.jinja, beside the files llama.cpp's converter reads)."""
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["extra_special_tokens"] = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    processor = {"processor_class": "Gemma3Processor", "image_seq_length": IMAGE_TOKENS_PER_IMAGE}
    (folder / "processor_config.json").write_text(json.dumps(processor))
    (folder / "chat_template.jinja").write_text(GEMMA3_PROCESSOR_TEMPLATE)


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG, written by hand (no imaging library needed for a test picture)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
