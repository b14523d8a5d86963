"""The transformers worker serving a Whisper folder, as a real process started from its launcher:
a tiny random-weight Whisper (support.tiny_audio) transcribes and translates through
transformers' speech-recognition pipeline. Its words are noise, so the shape is what is checked:
verbose_json with ordered segment (and word) timestamps inside the audio, the duration as usage,
and OpenAI-shaped 400s for what it cannot do."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearth.audio.decode import decode_audio
from hearth.engines.transformers.folder import inspect_folder
from hearth.engines.transformers.speech import _timed
from support.tiny_audio import make_tiny_whisper, write_tone
from support.worker_process import running_worker

pytest.importorskip("transformers", reason="needs the hearth-gateway[transformers] extra")
pytest.importorskip("av", reason="needs the hearth-gateway[audio] extra")


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")


@pytest.fixture(scope="module")
def worker(whisper_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The worker as a process (module-wide: the model loads once)."""
    log = tmp_path_factory.mktemp("worker") / "w.log"
    with running_worker(whisper_dir, "tiny-whisper", log) as base_url:
        yield base_url


def audio_of(path: Path) -> str:
    """The file as the gateway sends it: decoded to 16 kHz mono WAV, base64."""
    return base64.b64encode(decode_audio(path.read_bytes(), 600).wav).decode()


def assert_well_timed(items: list[dict[str, Any]], duration: float) -> None:
    assert items, "no timed items"
    previous_end = 0.0
    for item in items:
        assert 0.0 <= item["start"] <= item["end"] <= duration
        assert item["start"] >= previous_end
        previous_end = item["end"]


def test_a_whisper_folder_is_served_for_transcription(whisper_dir: Path) -> None:
    info = inspect_folder(whisper_dir)
    assert info.task == "transcription"
    capabilities = info.capabilities()
    assert capabilities.names() == ["transcription"]
    assert not capabilities.chat and not capabilities.streaming


async def test_transcription_is_verbose_json_with_ordered_segments_and_its_duration(
    worker: str, tmp_path: Path
) -> None:
    tone = write_tone(tmp_path / "tone.flac", 3.5, format="FLAC")
    async with httpx.AsyncClient(base_url=worker, timeout=120) as client:
        reply = await client.post(
            "/v1/audio/transcriptions", json={"audio": audio_of(tone), "language": "en"}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["task"] == "transcribe"
        assert body["language"] == "english"
        assert body["duration"] == pytest.approx(3.5)
        assert body["usage"] == {"type": "duration", "seconds": pytest.approx(3.5)}
        assert isinstance(body["text"], str) and body["text"]
        segments = body["segments"]
        assert_well_timed(segments, 3.5)
        assert [s["id"] for s in segments] == list(range(len(segments)))
        for segment in segments:
            assert isinstance(segment["text"], str) and segment["text"].strip()
            assert segment["tokens"] and all(isinstance(t, int) for t in segment["tokens"])
        assert "words" not in body


async def test_word_timestamps_a_prompt_and_sampling_are_taken(worker: str, tmp_path: Path) -> None:
    tone = write_tone(tmp_path / "tone.wav", 2.0, rate=16_000, channels=1)
    request = {
        "audio": audio_of(tone),
        "language": "de",
        "prompt": "the thin " * 200,  # longer than Whisper reads: its end is kept
        "temperature": 0.7,
        "timestamp_granularities": ["segment", "word"],
    }
    async with httpx.AsyncClient(base_url=worker, timeout=120) as client:
        reply = await client.post("/v1/audio/translations", json=request)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["task"] == "translate"
        assert_well_timed(body["words"], 2.0)
        assert all(isinstance(w["word"], str) for w in body["words"])
        assert body["segments"] and body["segments"][0]["temperature"] == 0.7


async def test_audio_past_30_seconds_is_transcribed_window_after_window(
    worker: str, tmp_path: Path
) -> None:
    tone = write_tone(tmp_path / "long.flac", 41.0, rate=16_000, channels=1, format="FLAC")
    async with httpx.AsyncClient(base_url=worker, timeout=300) as client:
        reply = await client.post("/v1/audio/transcriptions", json={"audio": audio_of(tone)})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["duration"] == pytest.approx(41.0)
        assert_well_timed(body["segments"], 41.0)


def test_the_pipelines_chunks_are_made_well_timed() -> None:
    """Whisper's timestamps come from its own tokens: a chunk may lack its end (the window ran
    out), start before the last ended, or pass the end of the audio."""
    chunks = [
        {"text": " one", "timestamp": (0.5, 2.0)},
        {"text": "   ", "timestamp": (2.0, 2.5)},  # no words: left out
        {"text": " two", "timestamp": (1.5, None)},  # overlaps; open end: the next start
        {"text": " three", "timestamp": (4.0, 12.0)},  # past the end of the audio
        {"text": " four", "timestamp": (None, None)},
    ]
    assert list(_timed(chunks, 10.0)) == [
        (" one", 0.5, 2.0),
        (" two", 2.0, 4.0),
        (" three", 4.0, 10.0),
        (" four", 10.0, 10.0),
    ]


@pytest.mark.parametrize(
    ("path", "request_body", "param", "says"),
    [
        ("/v1/audio/transcriptions", {"audio": "not base64!"}, "file", "'audio'"),
        ("/v1/audio/transcriptions", {}, "file", "'audio' must be"),
        ("/v1/audio/transcriptions", {"language": "xx"}, "language", "'xx'"),
        ("/v1/audio/transcriptions", {"temperature": 3}, "temperature", "between 0 and 1"),
        ("/v1/chat/completions", {"messages": []}, "model", "serves transcription"),
    ],
)
async def test_requests_it_cannot_serve_are_400s_naming_the_field(
    worker: str, tmp_path: Path, path: str, request_body: dict[str, Any], param: str, says: str
) -> None:
    tone = write_tone(tmp_path / "tone.wav", 0.5, rate=16_000, channels=1)
    body = {"audio": audio_of(tone), **request_body}
    if not request_body:
        body = {}
    async with httpx.AsyncClient(base_url=worker, timeout=60) as client:
        reply = await client.post(path, json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == param
    assert says in error["message"]
