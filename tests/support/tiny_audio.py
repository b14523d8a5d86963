"""A tiny Whisper with random weights, and audio files, built in the tests (no hub here).

`make_tiny_whisper` writes a model folder as a Whisper checkpoint on the Hub has it: a two-layer
encoder and decoder (`WhisperForConditionalGeneration`), a generation config with the language,
task and timestamp tokens Whisper's `generate` needs, and a `WhisperProcessor` (feature extractor
and a byte-level BPE tokenizer built here from a 256-symbol vocabulary, a few merges and Whisper's
special and timestamp tokens). Its transcripts are noise; what can be asserted is their shape.
`write_tone` writes a few seconds of a sine wave as an audio file with soundfile.
"""

from __future__ import annotations

from pathlib import Path

# Whisper decodes at most this many tokens per 30 s window: small, so noise ends quickly.
MAX_TOKENS = 48
D_MODEL = 64
LAYERS = 2
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (the byte-level BPE alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def make_tiny_whisper(folder: Path, *, seed: int = 0) -> Path:
    """A two-layer multilingual Whisper with random weights, saved in `folder`."""
    import torch
    from transformers import (
        AddedToken,
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=list(MERGES))
    # Whisper's special tokens, <|notimestamps|> last: the timestamps follow it directly.
    specials = [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.add_tokens(
        [AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False, special=False) for i in range(1501)]
    )
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
    )

    def token(text: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(text))

    eos = token("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=D_MODEL,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * D_MODEL,
        decoder_ffn_dim=2 * D_MODEL,
        max_source_positions=1500,
        max_target_positions=MAX_TOKENS,
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        decoder_start_token_id=token("<|startoftranscript|>"),
        begin_suppress_tokens=[eos],
        suppress_tokens=[],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    generation = GenerationConfig.from_model_config(config)
    # Not derived from the model's config again at generate time (which would drop the rest).
    generation._from_model_config = False
    generation.max_length = MAX_TOKENS
    generation.is_multilingual = True
    generation.lang_to_id = {f"<|{code}|>": token(f"<|{code}|>") for code in LANGUAGES}
    generation.task_to_id = {name: token(f"<|{name}|>") for name in ("transcribe", "translate")}
    generation.no_timestamps_token_id = token("<|notimestamps|>")
    generation.prev_sot_token_id = token("<|startofprev|>")
    generation.max_initial_timestamp_index = 50
    generation.alignment_heads = [[1, 0], [1, 1]]  # cross-attention heads for word timestamps
    generation.forced_decoder_ids = None
    model.generation_config = generation
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_tone(
    path: Path,
    seconds: float,
    *,
    rate: int = 44_100,
    channels: int = 2,
    format: str = "WAV",
    frequency: float = 440.0,
) -> Path:
    """`seconds` of a sine wave written with soundfile (WAV, FLAC, OGG, ...)."""
    import numpy as np
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    soundfile.write(path, np.stack([wave] * channels, axis=1), rate, format=format)
    return path
