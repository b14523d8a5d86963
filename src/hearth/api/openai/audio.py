"""POST /v1/audio/transcriptions and /v1/audio/translations: an uploaded audio file to text, in
OpenAI's response formats (json, text, srt, vtt, verbose_json).

The upload is decoded here (hearth.audio, off the event loop), checked against the size and
duration limits, and sent down the pipeline as 16 kHz mono WAV (base64, in the JSON body every
engine call carries) to a model with the `transcription` capability: Hearth's transformers
worker takes that JSON; a whisper.cpp server (command engine) and a remote deployment get the WAV
as a multipart form (upstream/speech.py). Each answer reaches here as verbose_json with `usage`
in audio seconds, which accounting prices (`price.audio_minute`); the other formats are made from
it here, the same whichever engine answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import Field
from starlette.datastructures import FormData, UploadFile

from hearth.api.gateway import gateway_headers, run_pipeline
from hearth.api.services import services_of
from hearth.audio.decode import decode_audio
from hearth.config import Settings
from hearth.errors import APIError, InvalidRequest, RequestTooLarge, UpstreamError
from hearth.wire.base import ModelRequest, parse_request
from hearth.wire.outcome import Completion

TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSLATIONS = "/v1/audio/translations"
FORM_OVERHEAD = 64 * 1024  # the other form fields and the multipart framing, beside the file
MAX_PROMPT_CHARS = 4096  # Whisper reads the last 224 tokens of a prompt at most

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
Granularity = Literal["segment", "word"]


class SpeechRequest(ModelRequest):
    """What an engine is sent: the options and the audio, answered as verbose_json."""

    language: str | None = Field(None, min_length=2, max_length=16, pattern=r"^[A-Za-z-]+$")
    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    temperature: float | None = Field(None, ge=0, le=1)
    timestamp_granularities: list[Granularity] | None = Field(None, min_length=1, max_length=2)
    # Whether the client's format needs timestamps (srt, vtt, verbose_json): a remote deployment
    # is then asked for verbose_json, else for json. Engines Hearth runs answer verbose_json.
    timestamps: bool = True
    audio: str = ""  # base64 of the decoded upload as 16 kHz mono WAV (hearth.audio.wav)


class TranscriptionRequest(SpeechRequest):
    """The form fields of a transcription or translation, validated like a JSON body."""

    response_format: ResponseFormat = "json"


def body_limits(settings: Settings) -> dict[str, tuple[int, str]]:
    """The request body limits of the audio routes, for BodySizeLimit: the upload and its form."""
    limit = int(settings.audio.max_bytes) + FORM_OVERHEAD
    return {path: (limit, "audio.max_bytes") for path in (TRANSCRIPTIONS, TRANSLATIONS)}


router = APIRouter()


@router.post(TRANSCRIPTIONS, summary="Transcribe audio into text in its language")
async def create_transcription(request: Request) -> Response:
    return await _speech_to_text(request, TRANSCRIPTIONS)


@router.post(TRANSLATIONS, summary="Translate audio into English text")
async def create_translation(request: Request) -> Response:
    return await _speech_to_text(request, TRANSLATIONS)


async def _speech_to_text(request: Request, path: str) -> Response:
    settings = services_of(request).settings.audio
    form = await _form(request)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest(
                "'file' is required: the audio file, sent as a multipart/form-data upload.",
                param="file",
            )
        if upload.size is not None and upload.size > settings.max_bytes:
            raise _too_large(upload.size, int(settings.max_bytes))
        payload = _payload(form, translation=path == TRANSLATIONS)
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > settings.max_bytes:
        raise _too_large(len(data), int(settings.max_bytes))
    decoded = await asyncio.to_thread(decode_audio, data, settings.max_seconds)
    del data
    wanted = payload.response_format
    granularities = payload.timestamp_granularities or ["segment"]
    if payload.timestamp_granularities is not None and wanted != "verbose_json":
        raise InvalidRequest(
            "'timestamp_granularities' needs response_format 'verbose_json'.",
            param="timestamp_granularities",
        )
    # Every engine answers verbose_json; the format the client asked for is made here.
    options = payload.model_dump(exclude_unset=True, exclude={"response_format", "audio"})
    speech = SpeechRequest(
        **options,
        timestamps=wanted not in ("json", "text"),
        audio=base64.b64encode(decoded.wav).decode("ascii"),
    )
    outcome = await run_pipeline(request, speech, path, capability="transcription")
    if not isinstance(outcome, Completion):  # never: transcriptions are not streamed
        await outcome.aclose()
        raise UpstreamError("the engine streamed an answer that should have been one JSON body")
    headers = gateway_headers(request, outcome)
    body = outcome.body
    text = body.get("text")
    if not isinstance(text, str):
        raise UpstreamError("the engine's transcription has no 'text'")
    if wanted == "text":
        return PlainTextResponse(text + "\n", headers=headers)
    if wanted in ("srt", "vtt"):
        cues = _cues(body.get("segments"), text, decoded.seconds)
        content = to_srt(cues) if wanted == "srt" else to_vtt(cues)
        media = "text/plain" if wanted == "srt" else "text/vtt"
        return PlainTextResponse(content, media_type=media, headers=headers)
    usage = body.get("usage")
    if wanted == "json":
        shaped: dict[str, Any] = {"text": text}
        if isinstance(usage, dict):
            shaped["usage"] = usage
        return JSONResponse(shaped, headers=headers)
    shaped = {
        "task": body.get("task") or ("translate" if path == TRANSLATIONS else "transcribe"),
        "language": body.get("language") or ("english" if path == TRANSLATIONS else None),
        "duration": body.get("duration", decoded.seconds),
        "text": text,
    }
    if "segment" in granularities:
        shaped["segments"] = body.get("segments") or []
    if "word" in granularities:
        shaped["words"] = body.get("words") or []
    if isinstance(usage, dict):
        shaped["usage"] = usage
    return JSONResponse(shaped, headers=headers)


async def _form(request: Request) -> FormData:
    """The multipart form: one file, a few small fields."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(
            "Send the audio as multipart/form-data, with the audio in 'file' and the model in "
            "'model'.",
            param="file",
        )
    try:
        return await request.form(max_files=1, max_fields=32, max_part_size=MAX_PROMPT_CHARS * 4)
    except APIError:
        raise  # the body limit
    except Exception as exc:  # Starlette's multipart errors: a malformed upload
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        raise InvalidRequest(f"The multipart form could not be read: {detail}.") from None


def _payload(form: FormData, translation: bool) -> TranscriptionRequest:
    """The form's fields as a validated request (a 400 naming the field that is wrong)."""
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name == "file":
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"'{name}' must be a form field, not a file.", param=name)
        if name in ("timestamp_granularities[]", "timestamp_granularities"):
            fields.setdefault("timestamp_granularities", []).append(value)
        elif name == "stream":
            if value.lower() in ("true", "1"):
                raise InvalidRequest("Transcriptions cannot be streamed.", param="stream")
        elif name in ("model", "language", "prompt", "response_format", "temperature"):
            fields[name] = value
        # Other fields (chunking_strategy, include[], ...) are not forwarded: no engine here
        # reads them, and an engine must not be handed form text it did not ask for.
    if "model" not in fields:
        raise InvalidRequest("'model' is required.", param="model")
    if translation:
        fields.pop("language", None)  # translations are into English; OpenAI takes none
    return parse_request(TranscriptionRequest, json.dumps(fields).encode())


def _too_large(size: int, limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"The audio file is {size} bytes; the limit is {limit} bytes (setting audio.max_bytes).",
        param="file",
    )


Cue = tuple[float, float, str]


def _cues(segments: Any, text: str, duration: float) -> list[Cue]:
    """(start, end, text) of the engine's segments; the whole text as one cue if it gave none."""
    cues: list[Cue] = []
    for segment in segments if isinstance(segments, list) else []:
        if not isinstance(segment, dict):
            continue
        start, end, words = segment.get("start"), segment.get("end"), segment.get("text")
        if not isinstance(start, int | float) or not isinstance(end, int | float):
            continue
        if isinstance(words, str) and words.strip():
            cues.append((float(start), max(float(start), float(end)), words.strip()))
    if not cues and text.strip():
        cues.append((0.0, duration, text.strip()))
    return cues


def _clock(seconds: float, separator: str) -> str:
    millis = round(max(0.0, seconds) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def _one_line(text: str) -> str:
    # A blank line would end the cue early.
    return "\n".join(line for line in text.splitlines() if line.strip())


def to_srt(cues: list[Cue]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    return "".join(
        f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{_one_line(text)}\n\n"
        for n, (start, end, text) in enumerate(cues, 1)
    )


def to_vtt(cues: list[Cue]) -> str:
    """WebVTT: the header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues."""
    body = "".join(
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{_one_line(text).replace('-->', '->')}\n\n"
        for start, end, text in cues
    )
    return "WEBVTT\n\n" + body
