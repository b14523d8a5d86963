"""A stand-in for whisper.cpp's server (`whisper-server`, examples/server in ggml-org/whisper.cpp)
for tests: no whisper.cpp binary is here and none can be fetched. It takes the command line and
answers the HTTP API the way whisper.cpp's server does (server.cpp and server-common.cpp):

- `--host`, `--port`, `-m/--model` (the file must exist), `--request-path` (default none) and
  `--inference-path` (default /inference); `GET {request-path}/health` answers {"status":"ok"}.
- `POST {request-path}{inference-path}` takes a multipart form: `file` (a WAV; 400
  {"error":"no 'file' field in the request"} without one, 400 {"error":"failed to read audio
  data"} if it is not a WAV), `response_format` (json, the default; text, srt, vtt or
  verbose_json), `language` (default "en"; "auto" detects), `prompt`, `temperature`,
  `translate`. Other fields are read by the real server and ignored here.
- Answers are shaped as whisper.cpp's: `text` with a newline after each segment's text,
  verbose_json segments with `start`/`end` in seconds, per-token `words`, `tokens`,
  `temperature`, `avg_logprob`, `no_speech_prob`, and `detected_language`.

Instead of recognising speech it says one segment per second of audio (" Second N."), so tests
can check timestamps against the audio's length. Each request's form fields and the WAV's shape
(channels, rate, sample width, frames) are appended as one JSON line to $FAKE_WHISPER_LOG.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import wave
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

LANGUAGES = {"en": "english", "fr": "french", "de": "german", "auto": "english"}


def _segments(seconds: float) -> list[tuple[int, int, str]]:
    """(t0 ms, t1 ms, text) a second each; the text starts with a space, as whisper's does."""
    count = max(1, math.ceil(seconds))
    return [
        (i * 1000, min(round(seconds * 1000), (i + 1) * 1000), f" Second {i + 1}.")
        for i in range(count)
    ]


def _stamp(ms: int, comma: bool = False) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{',' if comma else '.'}{millis:03d}"


def _verbose(
    segments: list[tuple[int, int, str]], seconds: float, language: str, task: str, temp: float
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task": task,
        "language": language,
        "duration": seconds,
        "text": "".join(text + "\n" for _, _, text in segments),
        "segments": [],
        "detected_language": language,
        "detected_language_probability": 0.97,
        "language_probabilities": {language: 0.97},
    }
    for i, (t0, t1, text) in enumerate(segments):
        pieces = text.split(" ")[1:]
        step = (t1 - t0) // max(1, len(pieces))
        words = [
            {
                "word": " " + piece,
                "start": (t0 + j * step) * 0.001,
                "end": (t0 + (j + 1) * step) * 0.001,
                "probability": 0.9,
            }
            for j, piece in enumerate(pieces)
        ]
        out["segments"].append(
            {
                "id": i,
                "text": text,
                "start": t0 * 0.001,
                "end": t1 * 0.001,
                "words": words,
                "tokens": list(range(100 + i, 100 + i + len(pieces))),
                "temperature": temp,
                "avg_logprob": -0.1,
                "no_speech_prob": 0.01,
            }
        )
    return out


def make_app(request_path: str, inference_path: str, log: Path | None) -> Starlette:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def inference(request: Request) -> Response:
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return JSONResponse({"error": "no 'file' field in the request"}, status_code=400)
            data, filename = await upload.read(), upload.filename
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        try:
            with wave.open(io.BytesIO(data), "rb") as source:
                shape = {
                    "channels": source.getnchannels(),
                    "rate": source.getframerate(),
                    "width": source.getsampwidth(),
                    "frames": source.getnframes(),
                }
        except (wave.Error, EOFError):
            return JSONResponse({"error": "failed to read audio data"}, status_code=400)
        if log is not None:
            record = {"fields": fields, "filename": filename, "wav": shape}
            with log.open("a") as out:
                out.write(json.dumps(record) + "\n")
        seconds = shape["frames"] / shape["rate"]
        segments = _segments(seconds)
        language = LANGUAGES.get(fields.get("language", "en"), "english")
        task = "translate" if fields.get("translate") in ("true", "1") else "transcribe"
        wanted = fields.get("response_format", "json")
        text = "".join(t + "\n" for _, _, t in segments)
        if wanted == "text":
            return PlainTextResponse(text, media_type="text/html; charset=utf-8")
        if wanted == "srt":
            cues = "".join(
                f"{i + 1}\n{_stamp(t0, True)} --> {_stamp(t1, True)}\n{t}\n\n"
                for i, (t0, t1, t) in enumerate(segments)
            )
            return PlainTextResponse(cues, media_type="application/x-subrip")
        if wanted == "vtt":
            cues = "".join(f"{_stamp(t0)} --> {_stamp(t1)}\n{t}\n\n" for t0, t1, t in segments)
            return PlainTextResponse("WEBVTT\n\n" + cues, media_type="text/vtt")
        if wanted == "verbose_json":
            temp = float(fields.get("temperature", "0"))
            return JSONResponse(_verbose(segments, seconds, language, task, temp))
        return JSONResponse({"text": text})

    return Starlette(
        routes=[
            Route(request_path + "/health", health, methods=["GET"]),
            Route(request_path + inference_path, inference, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("-m", "--model", default="models/ggml-base.en.bin")
    parser.add_argument("--request-path", default="")
    parser.add_argument("--inference-path", default="/inference")
    args = parser.parse_args()
    if not Path(args.model).is_file():
        print(f"error: failed to open '{args.model}'", file=sys.stderr)
        sys.exit(3)
    log = os.environ.get("FAKE_WHISPER_LOG")
    app = make_app(args.request_path, args.inference_path, Path(log) if log else None)
    print(f"whisper server listening at http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
