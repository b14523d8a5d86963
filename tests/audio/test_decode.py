"""Decoding uploads (hearth.audio): real files of several formats written with soundfile, decoded
by PyAV into Hearth's 16 kHz mono WAV; files that are not audio, are broken or are too long are
400s naming `file`."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from hearth.audio.decode import container_of, decode_audio
from hearth.audio.wav import SAMPLE_RATE, read_wav, wav_bytes
from hearth.errors import InvalidRequest
from support.tiny_audio import write_tone

pytest.importorskip("av", reason="needs the hearth-gateway[audio] extra")


@pytest.mark.parametrize(
    ("format", "rate", "channels", "seconds", "container"),
    [
        ("WAV", 44_100, 2, 2.0, "wav"),
        ("WAV", 8_000, 1, 1.5, "wav"),
        ("FLAC", 22_050, 2, 2.5, "flac"),
        ("OGG", 48_000, 1, 1.0, "ogg"),
        ("MP3", 44_100, 1, 2.0, "mp3"),
    ],
)
def test_audio_of_any_rate_and_layout_becomes_16_khz_mono_of_the_same_length(
    tmp_path: Path, format: str, rate: int, channels: int, seconds: float, container: str
) -> None:
    path = write_tone(tmp_path / f"tone.{format.lower()}", seconds, rate=rate, channels=channels,
                      format=format)  # fmt: skip
    data = path.read_bytes()
    assert container_of(data) == container
    decoded = decode_audio(data, max_seconds=60)
    # Lossy codecs pad a frame or so; the duration is what was decoded.
    assert decoded.seconds == pytest.approx(seconds, abs=0.06 if format in ("OGG", "MP3") else 1e-3)
    with wave.open(io.BytesIO(decoded.wav)) as out:
        assert (out.getnchannels(), out.getsampwidth(), out.getframerate()) == (1, 2, SAMPLE_RATE)
        assert out.getnframes() == round(decoded.seconds * SAMPLE_RATE)
    samples = read_wav(decoded.wav)
    # Still a 440 Hz tone: its strongest frequency survived the resampling.
    middle = samples[len(samples) // 4 : len(samples) // 4 + SAMPLE_RATE // 2]
    spectrum = np.abs(np.fft.rfft(middle))
    assert np.argmax(spectrum) * SAMPLE_RATE / len(middle) == pytest.approx(440, abs=4)
    assert 0.2 < float(np.max(np.abs(samples))) < 0.4  # the 0.3 amplitude, downmixed


def test_audio_longer_than_the_limit_is_refused_naming_the_setting(tmp_path: Path) -> None:
    data = write_tone(tmp_path / "long.flac", 12.0, rate=16_000, channels=1, format="FLAC")
    with pytest.raises(InvalidRequest) as refused:
        decode_audio(data.read_bytes(), max_seconds=10)
    assert refused.value.param == "file"
    assert "longer than 10 seconds" in refused.value.message
    assert "audio.max_seconds" in refused.value.message
    assert decode_audio(data.read_bytes(), max_seconds=12.5).seconds == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"%PDF-1.7 this is a document, not a recording" * 20, "not an audio file"),
        (b"", "not an audio file"),
        (b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8, "could not be decoded"),
        (b"fLaC" + b"\x00" * 64, "could not be decoded"),
    ],
)
def test_what_is_not_audio_is_a_400_naming_file(data: bytes, says: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_audio(data, max_seconds=60)
    assert refused.value.param == "file"
    assert says in refused.value.message


def test_a_truncated_file_is_refused_or_decoded_as_far_as_it_goes(tmp_path: Path) -> None:
    data = write_tone(tmp_path / "t.flac", 3.0, format="FLAC").read_bytes()
    with pytest.raises(InvalidRequest) as refused:
        decode_audio(data[:2000], max_seconds=60)
    assert refused.value.param == "file"
    wav = write_tone(tmp_path / "t.wav", 1.0, rate=16_000, channels=1).read_bytes()
    assert decode_audio(wav[: 44 + 3200], max_seconds=60).seconds == pytest.approx(0.1)


def test_hearths_wav_transport_round_trips_and_refuses_other_shapes(tmp_path: Path) -> None:
    samples = (np.linspace(-0.5, 0.5, 1600) * 32767).astype("<i2")
    back = read_wav(wav_bytes(samples.tobytes()))
    assert back.dtype == np.float32 and len(back) == 1600
    assert np.allclose(back * 32768, samples, atol=1)
    stereo = write_tone(tmp_path / "s.wav", 0.5, rate=16_000, channels=2).read_bytes()
    with pytest.raises(ValueError, match="mono"):
        read_wav(stereo)
    with pytest.raises(ValueError, match="not a WAV file"):
        read_wav(b"not a wav")
