"""The audio every transcription engine gets from Hearth: 16 kHz, mono, 16-bit PCM WAV, the
format whisper.cpp, faster-whisper and Hearth's own worker all read. Standard library only, so
the worker reads it without the gateway's decoder."""

from __future__ import annotations

import io
import wave
from typing import Any

SAMPLE_RATE = 16_000


def wav_bytes(samples: bytes) -> bytes:
    """16-bit little-endian mono samples at SAMPLE_RATE as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples)
    return buffer.getvalue()


def read_wav(data: bytes) -> Any:
    """The samples of a WAV file in Hearth's transport format as float32 in [-1, 1] (a numpy
    array); ValueError for anything else."""
    import numpy as np

    try:
        with wave.open(io.BytesIO(data), "rb") as source:
            shape = (source.getnchannels(), source.getsampwidth(), source.getframerate())
            if shape != (1, 2, SAMPLE_RATE):
                raise ValueError(
                    f"expected 16 kHz mono 16-bit PCM, got {shape[2]} Hz, {shape[0]} channel(s), "
                    f"{shape[1] * 8}-bit"
                )
            frames = source.readframes(source.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file: {exc}") from None
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
