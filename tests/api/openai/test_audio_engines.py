"""Transcription through the two engines besides Hearth's transformers worker, through a real
`hearth serve` and the real `openai` client:

- a whisper.cpp server a user already has, run by the `command` engine. No whisper.cpp binary is
  here and none can be fetched, so it is support/fake_whisper_server.py, which takes
  whisper-server's command line and answers its `POST /inference` multipart API as whisper.cpp's
  server does (a segment a second of audio instead of recognised speech);
- remote OpenAI-compatible deployments with `capabilities: [transcription]`: the scripted
  upstream (support/scripted_upstream.py), which records the multipart form it received.

Checked: every response_format through both, what each received (the decoded upload as 16 kHz
mono WAV, the options in its own words, the deployment's key), the usage row's audio seconds and
cost, fallback from a failing remote, and the errors a user can meet.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from hearth.engines.command.launcher import whisper_inference_path
from hearth.errors import ConfigError
from hearth.settings_layers import load_settings
from hearth.upstream.speech import SpeechCall
from support.access import query
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream
from support.tiny_audio import write_tone

pytest.importorskip("av", reason="needs the hearth-gateway[audio] extra")

FAKE_WHISPER = Path(__file__).parents[2] / "support" / "fake_whisper_server.py"
CLOUD_KEY = "sk-cloud-speech-3b9e"
SECONDS = 2.5
PER_SECOND = 0.01  # price.audio_minute 0.6


class Gateway:
    def __init__(self, server: HearthServer, upstream: ScriptedUpstream, root: Path) -> None:
        self.server, self.upstream = server, upstream
        self.database = f"sqlite:///{root / 'hearth.db'}"
        self.whisper_log = root / "whisper.jsonl"

    def client(self) -> openai.OpenAI:
        return self.server.openai()

    def whisper_received(self) -> dict[str, Any]:
        """The last form the fake whisper.cpp server was sent."""
        record: dict[str, Any] = json.loads(self.whisper_log.read_text().splitlines()[-1])
        return record

    def usage_row(self, request_id: str) -> tuple[Any, ...]:
        deadline = time.monotonic() + 10
        while True:
            rows = query(
                self.database,
                "SELECT model, deployment, status, audio_seconds, cost FROM usage "
                f"WHERE request_id = '{request_id}'",
            )
            if rows or time.monotonic() > deadline:
                assert len(rows) == 1
                return tuple(rows[0])
            time.sleep(0.1)


@pytest.fixture(scope="module")
def gateway(
    start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("audio-engines")
    upstream = ScriptedUpstream().start()
    model_file = root / "ggml-base.bin"
    model_file.write_bytes(b"not read by the fake")
    settings = {
        "preload": [],
        "database_url": f"sqlite:///{root / 'hearth.db'}",
        "usage": {"flush_interval": 0.2},
        "routing": {"retries": 1, "backoff": 0.02, "backoff_max": 1, "health_check_interval": 0},
        "models": {
            "whisper-cpp": {
                "model": str(model_file),
                # whisper-server's own flags; a non-default inference path, as its
                # --request-path/--inference-path set it, is where Hearth sends the forms.
                "command": f"'{sys.executable}' '{FAKE_WHISPER}' --host {{host}} --port {{port}} "
                "-m {model} --request-path /api --inference-path /asr",
                "task": "transcription",
                "env": {"FAKE_WHISPER_LOG": str(root / "whisper.jsonl")},
                "health_path": "/api/health",
                "price": {"audio_minute": 0.6},
            }
        },
        "deployments": {
            "cloud": {
                "url": upstream.url("cloud"),
                "model": "whisper-1",
                "api_key": "env:CLOUD_SPEECH_KEY",
                "capabilities": ["transcription"],
                "price": {"audio_minute": 0.6},
            },
            "broken": {"url": upstream.url("broken"), "capabilities": ["transcription"]},
            "refuses": {"url": upstream.url("refuses"), "capabilities": ["transcription"]},
            "backup": {
                "url": upstream.url("backup"),
                "model": "whisper-large",
                "capabilities": ["transcription"],
            },
            "chatty": {"url": upstream.url("chatty")},  # chat only
        },
        "routes": {
            "speech": {"deployments": ["broken", "backup"]},
            "strict": {"deployments": ["refuses", "backup"]},
        },
    }
    config = root / "hearth.yaml"
    config.write_text(yaml.safe_dump(settings))
    server = start_hearth("--config", str(config), env={"CLOUD_SPEECH_KEY": CLOUD_KEY})
    yield Gateway(server, upstream, root)
    upstream.stop()


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2.5 s of 440 Hz, stereo 44.1 kHz FLAC: decoded by the gateway to 16 kHz mono WAV."""
    return write_tone(tmp_path_factory.mktemp("tone") / "tone.flac", SECONDS, format="FLAC")


WHISPER_SRT = (
    "1\n00:00:00,000 --> 00:00:01,000\nSecond 1.\n\n"
    "2\n00:00:01,000 --> 00:00:02,000\nSecond 2.\n\n"
    "3\n00:00:02,000 --> 00:00:02,500\nSecond 3.\n\n"
)

WHISPER_VTT = (
    "WEBVTT\n\n"
    "00:00:00.000 --> 00:00:01.000\nSecond 1.\n\n"
    "00:00:01.000 --> 00:00:02.000\nSecond 2.\n\n"
    "00:00:02.000 --> 00:00:02.500\nSecond 3.\n\n"
)


def test_a_whisper_cpp_server_answers_every_response_format(gateway: Gateway, tone: Path) -> None:
    client = gateway.client()
    model = "whisper-cpp"
    plain = client.audio.transcriptions.create(model=model, file=tone)
    assert plain.text == "Second 1. Second 2. Second 3."
    assert plain.usage is not None and plain.usage.seconds == pytest.approx(SECONDS)
    # Whatever the client asked, whisper.cpp was asked for verbose_json, in its own words.
    sent = gateway.whisper_received()
    assert sent["fields"] == {
        "response_format": "verbose_json",
        "language": "auto",  # whisper-server would assume English
        "translate": "false",
    }
    assert sent["filename"] == "audio.wav"
    assert sent["wav"] == {"channels": 1, "rate": 16_000, "width": 2, "frames": 40_000}

    text = client.audio.transcriptions.create(model=model, file=tone, response_format="text")
    assert text == "Second 1. Second 2. Second 3.\n"
    srt = client.audio.transcriptions.create(model=model, file=tone, response_format="srt")
    assert srt == WHISPER_SRT
    vtt = client.audio.transcriptions.create(model=model, file=tone, response_format="vtt")
    assert vtt == WHISPER_VTT

    verbose = client.audio.transcriptions.create(
        model=model,
        file=tone,
        response_format="verbose_json",
        language="fr",
        prompt="Counting.",
        temperature=0.2,
        timestamp_granularities=["segment", "word"],
    )
    assert gateway.whisper_received()["fields"] == {
        "response_format": "verbose_json",
        "language": "fr",
        "translate": "false",
        "prompt": "Counting.",
        "temperature": "0.2",
    }
    assert (verbose.language, verbose.duration) == ("french", pytest.approx(SECONDS))
    assert verbose.segments is not None
    assert [(s.start, s.end, s.text) for s in verbose.segments] == [
        (0.0, 1.0, " Second 1."),
        (1.0, 2.0, " Second 2."),
        (2.0, 2.5, " Second 3."),
    ]
    assert verbose.segments[0].temperature == pytest.approx(0.2)
    assert verbose.words is not None
    assert [w.word for w in verbose.words] == ["Second", "1.", "Second", "2.", "Second", "3."]
    assert [(w.start, w.end) for w in verbose.words[:2]] == [(0.0, 0.5), (0.5, 1.0)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # openai marks translations so
def test_a_whisper_cpp_server_translates(gateway: Gateway, tone: Path) -> None:
    translated = gateway.client().audio.translations.create(
        model="whisper-cpp", file=tone, response_format="verbose_json"
    )
    assert translated.text == "Second 1. Second 2. Second 3."
    assert gateway.whisper_received()["fields"]["translate"] == "true"
    assert gateway.whisper_received()["fields"]["language"] == "auto"


def test_the_usage_row_counts_whisper_cpp_audio_seconds(gateway: Gateway, tone: Path) -> None:
    raw = gateway.client().audio.transcriptions.with_raw_response.create(
        model="whisper-cpp", file=tone
    )
    assert raw.headers["x-hearth-deployment"] == "whisper-cpp"
    model, deployment, status, seconds, cost = gateway.usage_row(raw.headers["x-request-id"])
    assert (model, deployment, status) == ("whisper-cpp", "whisper-cpp", 200)
    assert seconds == pytest.approx(SECONDS)
    assert cost == pytest.approx(SECONDS * PER_SECOND)


CLOUD_TEXT = "cloud heard 1. cloud heard 2. cloud heard 3."


def test_a_remote_deployment_answers_every_response_format(gateway: Gateway, tone: Path) -> None:
    client = gateway.client()
    received = gateway.upstream.received["cloud"]

    plain = client.audio.transcriptions.create(model="cloud", file=tone, language="en")
    assert plain.text == CLOUD_TEXT
    sent = received[-1]
    assert sent.headers["authorization"] == f"Bearer {CLOUD_KEY}"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.body["file"] == {
        "filename": "audio.wav",
        "content_type": "audio/wav",
        "channels": 1,
        "rate": 16_000,
        "seconds": SECONDS,
    }
    # Its name for the model; json where no timestamps are needed.
    assert {k: v for k, v in sent.body.items() if k != "file"} == {
        "task": "transcriptions",
        "model": "whisper-1",
        "response_format": "json",
        "language": "en",
    }

    text = client.audio.transcriptions.create(model="cloud", file=tone, response_format="text")
    assert text == CLOUD_TEXT + "\n"
    assert received[-1].body["response_format"] == "json"

    srt = client.audio.transcriptions.create(model="cloud", file=tone, response_format="srt")
    assert received[-1].body["response_format"] == "verbose_json"
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\ncloud heard 1.\n\n")
    assert srt.endswith("3\n00:00:02,000 --> 00:00:02,500\ncloud heard 3.\n\n")
    vtt = client.audio.transcriptions.create(model="cloud", file=tone, response_format="vtt")
    assert received[-1].body["response_format"] == "verbose_json"
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\ncloud heard 1.\n\n")

    verbose = client.audio.transcriptions.create(
        model="cloud",
        file=tone,
        response_format="verbose_json",
        prompt="Counting.",
        temperature=0.3,
        timestamp_granularities=["word", "segment"],
    )
    assert {k: v for k, v in received[-1].body.items() if k != "file"} == {
        "task": "transcriptions",
        "model": "whisper-1",
        "response_format": "verbose_json",
        "timestamp_granularities[]": ["word", "segment"],
        "prompt": "Counting.",
        "temperature": "0.3",
    }
    assert verbose.segments is not None and verbose.words is not None
    assert [(s.start, s.end) for s in verbose.segments] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    assert len(verbose.words) == 9 and verbose.words[-1].end == pytest.approx(SECONDS)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_remote_deployment_translates(gateway: Gateway, tone: Path) -> None:
    translated = gateway.client().audio.translations.create(model="cloud", file=tone)
    assert translated.text == CLOUD_TEXT
    assert gateway.upstream.received["cloud"][-1].body["task"] == "translations"


def test_remote_usage_is_its_own_seconds_or_the_audio_length(gateway: Gateway, tone: Path) -> None:
    client = gateway.client()
    raw = client.audio.transcriptions.with_raw_response.create(model="cloud", file=tone)
    # The scripted remote bills whole seconds, as OpenAI does: its figure is the one recorded.
    assert raw.parse().usage.seconds == 3
    _, deployment, _, seconds, cost = gateway.usage_row(raw.headers["x-request-id"])
    assert (deployment, seconds, cost) == ("cloud", 3, pytest.approx(3 * PER_SECOND))
    # A remote that reports no usage: the length of the audio Hearth sent.
    gateway.upstream.script("cloud", "nousage")
    raw = client.audio.transcriptions.with_raw_response.create(model="cloud", file=tone)
    assert raw.parse().usage.seconds == pytest.approx(SECONDS)
    _, _, _, seconds, cost = gateway.usage_row(raw.headers["x-request-id"])
    assert seconds == pytest.approx(SECONDS) and cost == pytest.approx(SECONDS * PER_SECOND)


def test_a_failing_remote_falls_back_to_the_next(gateway: Gateway, tone: Path) -> None:
    gateway.upstream.set_default("broken", "status:503")
    raw = gateway.client().audio.transcriptions.with_raw_response.create(
        model="speech", file=tone, response_format="srt"
    )
    assert raw.headers["x-hearth-deployment"] == "backup"
    assert raw.headers["x-hearth-attempts"] == "3"  # the retry on `broken`, then `backup`
    assert raw.parse().startswith("1\n00:00:00,000 --> 00:00:01,000\nbackup heard 1.")
    assert gateway.upstream.hits("broken") == 2
    sent = gateway.upstream.received["backup"][-1].body
    assert (sent["model"], sent["response_format"]) == ("whisper-large", "verbose_json")
    assert "authorization" not in gateway.upstream.received["backup"][-1].headers


def test_a_remotes_verdict_on_the_request_is_relayed_not_fallen_back_from(
    gateway: Gateway, tone: Path
) -> None:
    gateway.upstream.set_default("refuses", "status:400")
    before = gateway.upstream.hits("backup")
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client().audio.transcriptions.create(model="strict", file=tone)
    assert "scripted failure 400" in refused.value.message
    assert gateway.upstream.hits("backup") == before


def test_a_model_without_transcription_is_a_400(gateway: Gateway, tone: Path) -> None:
    answer = httpx.post(
        f"{gateway.server.base_url}/v1/audio/transcriptions",
        files={"file": ("tone.flac", tone.read_bytes())},
        data={"model": "chatty"},
        timeout=30,
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "model" and "does not support transcription" in error["message"]
    assert gateway.upstream.hits("chatty") == 0


# Units: whisper.cpp's command line and answers, and settings.


def test_the_inference_path_follows_whisper_servers_flags() -> None:
    assert whisper_inference_path(["whisper-server", "--port", "8080"]) == "/inference"
    assert whisper_inference_path(["s", "--inference-path", "/v1/audio/x"]) == "/v1/audio/x"
    assert whisper_inference_path(["s", "--request-path", "/w", "--port", "1"]) == "/w/inference"


def speech_call(dialect: Any, seconds: float = 1.0, **fields: Any) -> SpeechCall:
    import base64

    from hearth.audio.wav import wav_bytes

    audio = base64.b64encode(wav_bytes(b"\0\0" * int(16_000 * seconds))).decode()
    return SpeechCall.of(dialect, {"model": "m", "audio": audio, **fields}, "/audio/translations")


def test_older_whisper_cpp_answers_with_t0_t1_and_junk_are_read() -> None:
    call = speech_call("whisper.cpp", 2.0)
    assert call.translate and call.seconds == 2.0
    answer = call.answer(
        {
            "text": " One.\n Two.\n",
            "segments": [
                {"text": " One.", "t0": 0, "t1": 150},  # whisper.cpp's 10 ms unit
                {"text": " Two.", "t0": 150, "t1": 120},  # ends before it starts
                {"text": 3, "t0": 0, "t1": 1},
                "not a segment",
                {"text": " No times."},
            ],
        }
    )
    assert answer["text"] == "One. Two."
    assert [(s["start"], s["end"]) for s in answer["segments"]] == [(0.0, 1.5), (1.5, 1.5)]
    assert answer["task"] == "translate" and answer["duration"] == 2.0
    assert answer["usage"] == {"type": "duration", "seconds": 2.0}
    assert "words" not in answer


def test_a_form_never_carries_what_the_dialect_does_not_take() -> None:
    form = speech_call("openai", language="de", timestamps=False).form("whisper-1")
    assert dict(form.fields) == {"model": "whisper-1", "response_format": "json"}  # translation
    assert form.content.startswith(b"RIFF") and form.content_type == "audio/wav"
    with pytest.raises(Exception, match="base64 WAV"):
        SpeechCall.of("openai", {"audio": "bm90IGEgd2F2"}, "/audio/transcriptions")


def test_task_transcription_needs_an_engine_that_transcribes(tmp_path: Path) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text(
        yaml.safe_dump({"models": {"w": {"model": "w.gguf", "task": "transcription"}}})
    )
    with pytest.raises(ConfigError, match="task 'transcription' is served by"):
        load_settings(config, environ={})
    config.write_text(
        yaml.safe_dump({"deployments": {"r": {"url": "http://x/v1", "capabilities": ["speech"]}}})
    )
    with pytest.raises(ConfigError, match="transcription"):
        load_settings(config, environ={})
