"""Decoding an uploaded audio file with PyAV (FFmpeg): the container is recognised from its first
bytes (so FFmpeg never probes for playlists or other formats that open further files), the first
audio stream is decoded and resampled to 16 kHz mono as it goes, and decoding stops as soon as
the audio runs past the duration limit. CPU-bound: call it off the event loop."""

from __future__ import annotations

import importlib
import io
import itertools
from dataclasses import dataclass
from typing import Any

from hearth.audio.wav import SAMPLE_RATE, wav_bytes
from hearth.errors import EngineNotInstalled, InvalidRequest

INSTALL_HINT = "pip install 'hearth-gateway[audio]'"
FORMATS = "aac, aiff, flac, m4a, mp3, mp4, ogg, opus, wav, webm"


@dataclass(frozen=True)
class DecodedAudio:
    wav: bytes  # 16 kHz mono 16-bit PCM WAV (hearth.audio.wav)
    seconds: float  # its duration


def container_of(data: bytes) -> str | None:
    """FFmpeg's demuxer for the file's magic number; None when it is no audio file we read."""
    head = data[:12]
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "mp4"  # mp4, m4a, mov
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # webm, mka
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "aac"  # ADTS
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """The upload as 16 kHz mono WAV; InvalidRequest naming `file` when it is not audio we can
    decode, has none, or is longer than `max_seconds`."""
    container = container_of(data)
    if container is None:
        raise InvalidRequest(
            f"The file is not an audio file Hearth can read; send one of: {FORMATS}.",
            param="file",
        )
    av = _av()
    limit = int(max_seconds * SAMPLE_RATE)
    pieces: list[bytes] = []
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=container) as source:
            if not source.streams.audio:
                raise InvalidRequest("The file has no audio stream.", param="file")
            stream = source.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            frames = source.decode(stream)
            for frame in itertools.chain(frames, [None]):  # None: flush the resampler
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    count += len(samples)
                    if count > limit:
                        raise InvalidRequest(
                            f"The audio is longer than {max_seconds:g} seconds, the most one "
                            "request may send (setting audio.max_seconds).",
                            param="file",
                        )
                    pieces.append(samples.astype("<i2").tobytes())
    except av.error.FFmpegError as exc:
        raise InvalidRequest(
            f"The file could not be decoded as {container} audio: {exc.strerror or exc}.",
            param="file",
        ) from None
    if count == 0:
        raise InvalidRequest("The file holds no audio samples.", param="file")
    return DecodedAudio(wav_bytes(b"".join(pieces)), count / SAMPLE_RATE)


def _av() -> Any:
    """PyAV, untyped (an optional dependency)."""
    try:
        return importlib.import_module("av")
    except ImportError:
        raise EngineNotInstalled(
            f"Transcription needs PyAV to decode audio, which is not installed; run: {INSTALL_HINT}"
        ) from None
