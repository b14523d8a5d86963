"""Speech recognition in the transformers worker: a Whisper-family model through transformers'
automatic-speech-recognition pipeline. Imported only by the worker process."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hearth.engines.transformers.backends import WorkerError, load_transformers, torch_dtype
from hearth.engines.transformers.folder import Task


class SpeechBackend:
    """A Whisper-family model through transformers' automatic-speech-recognition pipeline: audio
    (16 kHz mono WAV, as Hearth sends it) to text with segment (and, asked, word) timestamps."""

    task: Task = "transcription"

    def __init__(self, path: Path, device: str, dtype: str | None) -> None:
        transformers = load_transformers()
        self.device = device
        self.processor: Any = transformers.AutoProcessor.from_pretrained(
            str(path), local_files_only=True
        )
        self.model: Any = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype(dtype)
        ).to(device)
        self.model.eval()
        self.pipeline: Any = transformers.pipeline(
            "automatic-speech-recognition",
            model=self.model,
            tokenizer=self.processor.tokenizer,
            feature_extractor=self.processor.feature_extractor,
            device=device,
        )
        generation = self.model.generation_config
        self.multilingual = bool(getattr(generation, "is_multilingual", False))
        self.languages = sorted(
            token.strip("<|>") for token in getattr(generation, "lang_to_id", None) or {}
        )
        self.word_timestamps = bool(getattr(generation, "alignment_heads", None))

    def transcribe(self, body: dict[str, Any], translate: bool) -> dict[str, Any]:
        """OpenAI's verbose_json answer (with `usage` in audio seconds); the gateway makes the
        other response formats from it."""
        from hearth.audio.wav import SAMPLE_RATE, read_wav

        audio = body.get("audio")
        if not isinstance(audio, str):
            raise WorkerError("'audio' must be base64-encoded 16 kHz mono WAV", param="file")
        try:
            samples = read_wav(base64.b64decode(audio, validate=True))
        except (ValueError, binascii.Error) as exc:
            raise WorkerError(f"'audio' is not Hearth's WAV format: {exc}", param="file") from None
        duration = len(samples) / SAMPLE_RATE
        options, language = self._options(body, translate)
        granularities = body.get("timestamp_granularities") or ["segment"]
        import torch

        def inputs() -> dict[str, Any]:  # the pipeline takes its input dict apart
            return {"raw": samples, "sampling_rate": SAMPLE_RATE}

        with torch.inference_mode():
            out = self.pipeline(
                inputs(), return_timestamps=True, return_language=True, generate_kwargs=options
            )
            words = None
            if "word" in granularities:
                if not self.word_timestamps:
                    raise WorkerError(
                        "this model has no alignment heads, so it gives no word timestamps",
                        param="timestamp_granularities",
                    )
                by_word = self.pipeline(inputs(), return_timestamps="word", generate_kwargs=options)
                words = [
                    {"word": text.strip(), "start": start, "end": end}
                    for text, start, end in _timed(by_word.get("chunks") or [], duration)
                ]
        chunks = out.get("chunks") or []
        if language is None:
            language = next((c.get("language") for c in chunks if c.get("language")), None)
        segments = [
            self._segment(index, text, start, end, options.get("temperature", 0.0))
            for index, (text, start, end) in enumerate(_timed(chunks, duration))
        ]
        answer: dict[str, Any] = {
            "task": "translate" if translate else "transcribe",
            "language": _language_name(language),
            "duration": duration,
            "text": str(out.get("text") or "").strip(),
            "segments": segments,
            "usage": {"type": "duration", "seconds": duration},
        }
        if words is not None:
            answer["words"] = words
        return answer

    def _options(self, body: dict[str, Any], translate: bool) -> tuple[dict[str, Any], str | None]:
        """generate() options for the request, and the language it names (None: detected)."""
        import torch

        options: dict[str, Any] = {}
        language = body.get("language")
        if language is not None:
            if not isinstance(language, str) or not language:
                raise WorkerError("'language' must be an ISO-639-1 code such as 'en'", "language")
            language = language.lower()
            if self.multilingual and language not in self.languages:
                raise WorkerError(
                    f"'language' {language!r} is not one this model knows; it knows: "
                    f"{', '.join(self.languages)}",
                    param="language",
                )
            if not self.multilingual and language != "en":
                raise WorkerError(
                    f"'language' {language!r}: this model transcribes English only",
                    param="language",
                )
        if self.multilingual:
            options["task"] = "translate" if translate else "transcribe"
            if language is not None:
                options["language"] = language
        elif translate:
            raise WorkerError("this model transcribes English only; it cannot translate", "model")
        temperature = body.get("temperature")
        if temperature is not None:
            if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
                raise WorkerError("'temperature' must be between 0 and 1", param="temperature")
            options["temperature"] = float(temperature)
        prompt = body.get("prompt")
        if prompt:
            if not isinstance(prompt, str):
                raise WorkerError("'prompt' must be a string", param="prompt")
            ids = self.processor.get_prompt_ids(prompt, return_tensors="pt")
            # As Whisper does: <|startofprev|> and the prompt's last tokens, up to half the
            # decoder's window (a longer prompt would leave no room for the transcript).
            room = int(self.model.config.max_target_positions) // 2 - 1
            if len(ids) > room + 1:
                ids = torch.cat([ids[:1], ids[len(ids) - room :]])
            options["prompt_ids"] = ids.to(self.device)
        return options, language

    def _segment(
        self, index: int, text: str, start: float, end: float, temperature: float
    ) -> dict[str, Any]:
        tokens = self.processor.tokenizer.encode(text, add_special_tokens=False)
        raw = text.encode()
        ratio = len(raw) / max(1, len(zlib.compress(raw)))
        return {
            "id": index,
            "seek": int(start * 100) // 3000 * 3000,  # the 30 s window it came from, in frames
            "start": start,
            "end": end,
            "text": text,
            "tokens": tokens,
            "temperature": temperature,
            "avg_logprob": 0.0,  # not reported by the pipeline
            "compression_ratio": round(ratio, 3),
            "no_speech_prob": 0.0,
        }


def _timed(chunks: list[dict[str, Any]], duration: float) -> Iterator[tuple[str, float, float]]:
    """(text, start, end) of the pipeline's chunks, made well-formed: within the audio, each
    starting no earlier than the one before ended, an open end closed at the next start or the
    end of the audio; chunks without text left out."""
    previous_end = 0.0
    rows = [c for c in chunks if str(c.get("text") or "").strip()]
    for position, chunk in enumerate(rows):
        start, end = [*(chunk.get("timestamp") or ()), None, None][:2]
        start = previous_end if start is None else min(max(float(start), previous_end), duration)
        if end is None and position + 1 < len(rows):
            end = (rows[position + 1].get("timestamp") or (None,))[0]
        end = duration if end is None else min(max(float(end), start), duration)
        previous_end = end
        yield str(chunk["text"]), round(start, 3), round(end, 3)


def _language_name(code: str | None) -> str | None:
    """OpenAI names the language in full ('english'); Whisper's pipeline may give either."""
    if code is None:
        return None
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return str(LANGUAGES.get(code, code))
