"""Transcriptions sent as multipart forms: to a whisper.cpp server (`POST /inference`, run by the
command engine) or to a remote OpenAI-compatible `/audio/transcriptions`, and their answers made
into the verbose_json Hearth's audio endpoint reads (what Hearth's transformers worker answers).

The audio is the gateway's decoded upload (16 kHz mono WAV, base64 in the request's `audio`).
"""

from __future__ import annotations

import base64
import binascii
import io
import wave
from dataclasses import dataclass
from typing import Any, Literal

from hearth.audio.wav import SAMPLE_RATE
from hearth.errors import InvalidRequest
from hearth.upstream.client import Form

Dialect = Literal["openai", "whisper.cpp"]
TRANSLATIONS = "/audio/translations"
# Formats a remote answers with timestamps; for json and text a remote is asked for json (the
# only formats some models, gpt-4o-transcribe for one, give).
TIMED = "verbose_json"


@dataclass(frozen=True)
class SpeechForm:
    """How an engine takes a transcription when not as Hearth's JSON body: a multipart form in
    `dialect`, posted to `path` (whisper.cpp's server: /inference, or its --inference-path)."""

    dialect: Dialect
    path: str


@dataclass(frozen=True)
class SpeechCall:
    """One transcription to send as a form: what it asks, and the audio with its length."""

    dialect: Dialect
    fields: dict[str, Any]
    translate: bool
    wav: bytes
    seconds: float

    @classmethod
    def of(cls, dialect: Dialect, fields: dict[str, Any], path: str) -> SpeechCall:
        try:
            wav = base64.b64decode(str(fields.get("audio") or ""), validate=True)
            with wave.open(io.BytesIO(wav), "rb") as source:
                seconds = source.getnframes() / (source.getframerate() or SAMPLE_RATE)
        except (binascii.Error, wave.Error, EOFError):  # never from Hearth's own endpoint
            raise InvalidRequest("'audio' is not a base64 WAV file.", param="file") from None
        return cls(dialect, fields, path == TRANSLATIONS, wav, seconds)

    def form(self, model: str | None = None) -> Form:
        """The multipart form: the WAV as `file`, and the options in the dialect's words."""
        asked = self.fields
        fields: list[tuple[str, str]] = []
        if self.dialect == "whisper.cpp":
            # whisper.cpp's server defaults to English (`-l en`): "auto" detects the language
            # (a translation's is always detected: it names none).
            fields.append(("response_format", "verbose_json"))
            fields.append(("language", str(asked.get("language") or "auto")))
            fields.append(("translate", "true" if self.translate else "false"))
        else:
            wanted = TIMED if asked.get("timestamps", True) else "json"
            fields.append(("model", model or str(asked.get("model") or "")))
            fields.append(("response_format", wanted))
            if asked.get("language") and not self.translate:
                fields.append(("language", str(asked["language"])))
            if wanted == TIMED:
                for granularity in asked.get("timestamp_granularities") or ():
                    fields.append(("timestamp_granularities[]", str(granularity)))
        if asked.get("prompt"):
            fields.append(("prompt", str(asked["prompt"])))
        if asked.get("temperature") is not None:
            fields.append(("temperature", str(asked["temperature"])))
        return Form(tuple(fields), "file", "audio.wav", self.wav, "audio/wav")

    def answer(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The upstream's answer as Hearth's verbose_json, with `usage` in audio seconds (the
        upstream's own figure when it gives one, else the length of the audio sent)."""
        raw_text = answer.get("text")
        text = raw_text if isinstance(raw_text, str) else ""
        raw_segments = answer.get("segments")
        segments = [
            s
            for s in (_segment(i, item) for i, item in enumerate(_dicts(raw_segments)))
            if s is not None
        ]
        if self.dialect == "whisper.cpp":
            # whisper.cpp ends every segment's text with a newline; OpenAI's is one line.
            text = " ".join(line.strip() for line in text.splitlines() if line.strip())
            words = [w for item in _dicts(raw_segments) for w in _words(item.get("words"))]
        else:
            words = _words(answer.get("words"))
        duration = answer.get("duration")
        usage = answer.get("usage")
        usage = dict(usage) if isinstance(usage, dict) else {"type": "duration"}
        if not isinstance(usage.get("seconds"), int | float):
            usage["seconds"] = round(self.seconds, 3)
        shaped: dict[str, Any] = {
            "task": "translate" if self.translate else "transcribe",
            "language": answer.get("language") if isinstance(answer.get("language"), str) else None,
            "duration": duration if isinstance(duration, int | float) else round(self.seconds, 3),
            "text": text.strip(),
            "segments": segments,
            "usage": usage,
        }
        if words:
            shaped["words"] = words
        return shaped


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _span(item: dict[str, Any]) -> tuple[float, float] | None:
    """(start, end) in seconds: OpenAI's and whisper.cpp's `start`/`end`, or the `t0`/`t1` of
    older whisper.cpp servers, in whisper.cpp's unit of 10 ms."""
    start, end = _number(item.get("start")), _number(item.get("end"))
    if start is None or end is None:
        t0, t1 = _number(item.get("t0")), _number(item.get("t1"))
        if t0 is None or t1 is None:
            return None
        start, end = t0 / 100, t1 / 100
    start = max(0.0, start)
    return round(start, 3), round(max(start, end), 3)


def _segment(index: int, item: dict[str, Any]) -> dict[str, Any] | None:
    span, text = _span(item), item.get("text")
    if span is None or not isinstance(text, str):
        return None
    tokens = item.get("tokens")
    return {
        "id": index,
        "seek": int(_number(item.get("seek")) or 0),
        "start": span[0],
        "end": span[1],
        "text": text,
        "tokens": [t for t in tokens if isinstance(t, int)] if isinstance(tokens, list) else [],
        "temperature": _number(item.get("temperature")) or 0.0,
        "avg_logprob": _number(item.get("avg_logprob")) or 0.0,
        "compression_ratio": _number(item.get("compression_ratio")) or 0.0,
        "no_speech_prob": _number(item.get("no_speech_prob")) or 0.0,
    }


def _words(value: Any) -> list[dict[str, Any]]:
    words = []
    for item in _dicts(value):
        span, word = _span(item), item.get("word")
        if span is not None and isinstance(word, str) and word.strip():
            words.append({"word": word.strip(), "start": span[0], "end": span[1]})
    return words
