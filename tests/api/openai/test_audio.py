"""/v1/audio/transcriptions and /v1/audio/translations through a real `hearth serve` with keys
and a SQLite usage database, with the real `openai` client; the model is a tiny random-weight
Whisper (support.tiny_audio) served by the transformers worker. Its words are noise, so each
response format's shape is checked, with the timestamps, the usage row's audio seconds and cost,
the limits and scopes of keys, and the 4xx answers to uploads that are not audio or too big."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hearth.api.openai.audio import to_srt, to_vtt
from hearth.budget import Budget
from support.access import ADMIN_KEY, create_key, query
from support.hearth_server import HearthServer, StartHearth
from support.tiny_audio import make_tiny_whisper, write_tone

pytest.importorskip("transformers", reason="needs the hearth-gateway[transformers] extra")
pytest.importorskip("av", reason="needs the hearth-gateway[audio] extra")

MODEL = "tiny-whisper"
CHAT_MODEL = "gemma-3-270m"  # the bundled model: chat only
MAX_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 16 * 1024
PER_SECOND = 0.01  # price.audio_minute 0.6


class Gateway:
    def __init__(self, server: HearthServer, database: str, keys: dict[str, str]) -> None:
        self.server, self.database, self.keys = server, database, keys

    def client(self, key: str = "speech") -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.server.base_url}/v1", api_key=self.keys[key], max_retries=0
        )

    def post(self, path: str, key: str = "speech", **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.keys[key]}"}
        url = f"{self.server.base_url}/v1/audio/{path}"
        return httpx.post(url, headers=headers, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def gateway(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    root = tmp_path_factory.mktemp("audio")
    whisper = make_tiny_whisper(root / MODEL)
    database = f"sqlite:///{root / 'hearth.db'}"
    keys = {
        "speech": create_key(database, "speech")[1],
        "chat-only": create_key(database, "chat-only", models=["gemma*"])[1],
        "thrifty": create_key(database, "thrifty", budget=Budget.parse("$0.05/day"))[1],
    }
    config = root / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        f"database_url: '{database}'\n"
        "auth: {admin_key: env:TEST_ADMIN_KEY, refresh_interval: 0.5}\n"
        "usage: {flush_interval: 0.2}\n"
        # Smaller than every upload here: the audio routes have their own limit.
        f"max_request_bytes: {MAX_REQUEST_BYTES}\n"
        f"audio: {{max_bytes: {MAX_BYTES}, max_seconds: 20}}\n"
        "models:\n"
        f"  {MODEL}:\n"
        f"    model: {whisper}\n"
        "    threads: 1\n"
        "    price: {audio_minute: 0.6}\n"
    )
    server = start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})
    return Gateway(server, database, keys)


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 440 Hz, stereo 44.1 kHz FLAC (decoded to 16 kHz mono by the gateway)."""
    path = write_tone(tmp_path_factory.mktemp("tone") / "tone.flac", 3.0, format="FLAC")
    assert MAX_REQUEST_BYTES < path.stat().st_size < MAX_BYTES
    return path


def assert_well_timed(items: list[Any], duration: float) -> None:
    assert items
    previous_end = 0.0
    for item in items:
        assert 0.0 <= item.start <= item.end <= duration
        assert item.start >= previous_end
        previous_end = item.end


SRT_CUE = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+?)\n\n", re.S)
VTT_CUE = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+?)\n\n", re.S)


def seconds(clock: str) -> float:
    hours, minutes, rest = clock.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def test_every_response_format_through_the_openai_client(gateway: Gateway, tone: Path) -> None:
    client = gateway.client()
    plain = client.audio.transcriptions.create(model=MODEL, file=tone)
    assert isinstance(plain.text, str) and plain.text
    assert plain.usage is not None and plain.usage.type == "duration"
    assert plain.usage.seconds == pytest.approx(3.0)

    text = client.audio.transcriptions.create(model=MODEL, file=tone, response_format="text")
    assert isinstance(text, str) and text.endswith("\n") and text.strip()

    srt = client.audio.transcriptions.create(model=MODEL, file=tone, response_format="srt")
    cues = SRT_CUE.findall(srt)
    assert cues and "".join(m.group(0) for m in SRT_CUE.finditer(srt)) == srt
    assert [int(n) for n, *_ in cues] == list(range(1, len(cues) + 1))
    times = [(seconds(start), seconds(end)) for _, start, end, _ in cues]
    assert all(0 <= start <= end <= 3.0 for start, end in times)
    assert [start for start, _ in times] == sorted(start for start, _ in times)

    vtt = client.audio.transcriptions.create(model=MODEL, file=tone, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n")
    body = vtt.removeprefix("WEBVTT\n\n")
    assert VTT_CUE.findall(body) and "".join(m.group(0) for m in VTT_CUE.finditer(body)) == body

    verbose = client.audio.transcriptions.create(
        model=MODEL,
        file=tone,
        response_format="verbose_json",
        language="en",
        prompt="A tone.",
        temperature=0.2,
        timestamp_granularities=["segment", "word"],
    )
    assert verbose.duration == pytest.approx(3.0)
    assert verbose.language == "english"
    assert verbose.segments is not None and verbose.words is not None
    assert_well_timed(verbose.segments, 3.0)
    assert_well_timed(verbose.words, 3.0)
    assert verbose.text.strip()

    only_words = client.audio.transcriptions.create(
        model=MODEL, file=tone, response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert only_words.words and only_words.segments is None


# openai 3.x marks audio.translations deprecated (OpenAI's newer models transcribe only); the
# endpoint is still OpenAI's, and Whisper models translate.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_translation_through_the_openai_client(gateway: Gateway, tone: Path) -> None:
    translated = gateway.client().audio.translations.create(
        model=MODEL, file=tone, response_format="verbose_json"
    )
    assert translated.duration == pytest.approx(3.0)
    assert_well_timed(translated.segments or [], 3.0)
    plain = gateway.client().audio.translations.create(model=MODEL, file=tone)
    assert isinstance(plain.text, str)


def usage_row(gateway: Gateway, request_id: str) -> tuple[Any, ...]:
    deadline = time.monotonic() + 10
    while True:
        rows = query(
            gateway.database,
            "SELECT model, status, audio_seconds, cost, prompt_tokens FROM usage "
            f"WHERE request_id = '{request_id}'",
        )
        if rows or time.monotonic() > deadline:
            assert len(rows) == 1
            return tuple(rows[0])
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("seconds_long", "rate", "format"), [(2.5, 22_050, "FLAC"), (4.25, 16_000, "WAV")]
)
def test_the_usage_row_counts_the_audio_seconds_at_the_models_price(
    gateway: Gateway, tmp_path: Path, seconds_long: float, rate: int, format: str
) -> None:
    audio = write_tone(tmp_path / f"a.{format.lower()}", seconds_long, rate=rate, channels=1,
                       format=format)  # fmt: skip
    raw = gateway.client().audio.transcriptions.with_raw_response.create(model=MODEL, file=audio)
    assert raw.parse().usage.seconds == pytest.approx(seconds_long)
    model, status, audio_seconds, cost, prompt_tokens = usage_row(
        gateway, raw.headers["x-request-id"]
    )
    assert (model, status, prompt_tokens) == (MODEL, 200, 0)
    assert audio_seconds == pytest.approx(seconds_long)
    assert cost == pytest.approx(seconds_long * PER_SECOND)


def test_keys_scopes_and_budgets_apply(gateway: Gateway, tone: Path) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        gateway.client("chat-only").audio.transcriptions.create(model=MODEL, file=tone)
    thrifty = gateway.client("thrifty")
    # $0.03 a request against $0.05 a day: the second is let in (spent 0.03), the third not.
    for _ in range(2):
        thrifty.audio.transcriptions.create(model=MODEL, file=tone)
    with pytest.raises(openai.RateLimitError) as refused:
        thrifty.audio.transcriptions.create(model=MODEL, file=tone)
    assert refused.value.code == "insufficient_quota"
    unauthenticated = httpx.post(
        f"{gateway.server.base_url}/v1/audio/transcriptions",
        files={"file": tone.read_bytes()},
        data={"model": MODEL},
    )
    assert unauthenticated.status_code == 401


def test_what_is_not_audio_is_a_400_naming_file(gateway: Gateway, tmp_path: Path) -> None:
    fake = tmp_path / "song.mp3"
    fake.write_text("These are lyrics, not a recording.\n" * 50)
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client().audio.transcriptions.create(model=MODEL, file=fake)
    assert refused.value.param == "file"
    assert "not an audio file" in refused.value.message


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


def test_uploads_over_the_size_or_duration_limit_are_refused(
    gateway: Gateway, tmp_path: Path
) -> None:
    # Just over audio.max_bytes: within the body limit's allowance for the form, refused by size.
    over = write_tone(tmp_path / "over.wav", 0.5, rate=16_000, channels=1).read_bytes()
    over += b"\0" * (MAX_BYTES + 100 - len(over))
    error = error_of(gateway.post("transcriptions", files={"file": over}, data={"model": MODEL}),
                     413)  # fmt: skip
    assert error["param"] == "file" and "audio.max_bytes" in error["message"]
    # Far over: refused from its Content-Length before the body is read.
    huge = b"RIFF" + b"\0" * (4 * MAX_BYTES)
    error = error_of(gateway.post("translations", files={"file": huge}, data={"model": MODEL}),
                     413)  # fmt: skip
    assert error["code"] == "request_too_large" and error["param"] is None
    assert (
        error["message"].startswith("The request body is") and "audio.max_bytes" in error["message"]
    )
    # Other paths keep max_request_bytes.
    chat = httpx.post(
        f"{gateway.server.base_url}/v1/chat/completions",
        headers={"authorization": f"Bearer {gateway.keys['speech']}"},
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "x" * 20_000}]},
    )
    assert "max_request_bytes" in error_of(chat, 413)["message"]
    # Small, but longer than audio.max_seconds.
    long = write_tone(tmp_path / "long.ogg", 25.0, rate=16_000, channels=1, format="OGG")
    assert long.stat().st_size < MAX_BYTES
    error = error_of(
        gateway.post("transcriptions", files={"file": long.read_bytes()}, data={"model": MODEL}),
        400,
    )
    assert error["param"] == "file" and "longer than 20 seconds" in error["message"]


@pytest.mark.parametrize(
    ("data", "file", "status", "param", "says"),
    [
        ({"model": CHAT_MODEL}, True, 400, "model", "does not support transcription"),
        ({"model": "no-such-model"}, True, 404, "model", "no-such-model"),
        ({}, True, 400, "model", "'model' is required"),
        ({"model": MODEL}, False, 400, "file", "'file' is required"),
        ({"model": MODEL, "response_format": "xml"}, True, 400, "response_format", "'json'"),
        ({"model": MODEL, "temperature": "hot"}, True, 400, "temperature", "number"),
        # The worker names 'language' in its message (its `param` is not relayed).
        ({"model": MODEL, "language": "xx"}, True, 400, "*", "'language' 'xx'"),
        (
            {"model": MODEL, "timestamp_granularities[]": "word"},
            True,
            400,
            "timestamp_granularities",
            "verbose_json",
        ),
        ({"model": MODEL, "stream": "true"}, True, 400, "stream", "cannot be streamed"),
    ],
)
def test_bad_fields_are_4xx_naming_them(
    gateway: Gateway,
    tone: Path,
    data: dict[str, str],
    file: bool,
    status: int,
    param: str | None,
    says: str,
) -> None:
    files = {"file": ("tone.flac", tone.read_bytes())} if file else {"other": ("x", b"x")}
    error = error_of(gateway.post("transcriptions", files=files, data=data), status)
    assert param == "*" or error["param"] == param
    assert says in error["message"]


def test_a_json_body_is_told_to_upload_the_file(gateway: Gateway) -> None:
    error = error_of(gateway.post("transcriptions", json={"model": MODEL, "file": "x"}), 400)
    assert error["param"] == "file" and "multipart/form-data" in error["message"]


def test_cue_formats() -> None:
    cues = [(0.0, 1.5, "Hello there."), (61.25, 3723.0, "Two lines\n\nwith a gap --> here")]
    assert to_srt(cues) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n00:01:01,250 --> 01:02:03,000\nTwo lines\nwith a gap --> here\n\n"
    )
    assert to_vtt(cues) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
        "00:01:01.250 --> 01:02:03.000\nTwo lines\nwith a gap -> here\n\n"
    )
