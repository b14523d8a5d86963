"""The models behind the transformers worker: embeddings and reranking through
sentence-transformers, generation and speech recognition through transformers. Imported only by
the worker process."""

from __future__ import annotations

import base64
import binascii
import importlib
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.engines.transformers.folder import Task

DEFAULT_MAX_TOKENS = 256


def _transformers() -> Any:
    """The transformers package, untyped: its own annotations are narrower than its behaviour."""
    return importlib.import_module("transformers")


class WorkerError(Exception):
    """A request the worker refuses: answered as an OpenAI error with this status."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _torch_dtype(dtype: str | None) -> Any:
    import torch

    if dtype in (None, "auto"):
        return "auto"
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    return value


class EmbeddingBackend:
    """A sentence-transformers embedding model: unit-length vectors, as OpenAI's are."""

    task: Task = "embeddings"

    def __init__(self, path: Path, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.device = device
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        dimension = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dimension = int(dimension() or 0)
        self.tokenizer = self.model.tokenizer

    def texts(self, raw: Any) -> tuple[list[str], int | None]:
        """Inputs as texts; token arrays are decoded (and counted as they came)."""
        if isinstance(raw, str):
            return [raw], None
        if not isinstance(raw, list) or not raw:
            raise WorkerError("'input' must be a string, a list of strings or token arrays")
        if all(isinstance(item, str) for item in raw):
            return list(raw), None
        if all(isinstance(item, int) for item in raw):
            raw = [raw]
        if all(isinstance(item, list) and all(isinstance(t, int) for t in item) for item in raw):
            texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in raw]
            return texts, sum(len(ids) for ids in raw)
        raise WorkerError("'input' must be a string, a list of strings or token arrays")

    def count_tokens(self, texts: list[str]) -> int:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length)
        return sum(len(ids) for ids in encoded["input_ids"])

    def encode(self, texts: list[str]) -> Any:
        return self.model.encode(
            texts,
            batch_size=32,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    def embed(self, raw: Any, dimensions: Any) -> tuple[list[list[float]], int]:
        texts, tokens = self.texts(raw)
        if dimensions is not None and (
            not isinstance(dimensions, int) or not 1 <= dimensions <= self.dimension
        ):
            raise WorkerError(
                f"this model gives {self.dimension}-dimensional embeddings; 'dimensions' must "
                f"be between 1 and {self.dimension}",
                param="dimensions",
            )
        vectors = self.encode(texts)
        if dimensions is not None and dimensions < self.dimension:
            # Matryoshka-style truncation, re-normalised to unit length.
            import numpy as np

            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        if tokens is None:
            tokens = self.count_tokens(texts)
        return vectors.tolist(), tokens


class RerankBackend:
    """A cross-encoder scores (query, document) pairs; an embedding model, when that is what
    the folder holds, scores by the cosine similarity of query and document (a fallback)."""

    task: Task = "rerank"

    def __init__(self, path: Path, device: str, cross_encoder: bool) -> None:
        self.device = device
        self.cross: Any = None
        self.embedder: EmbeddingBackend | None = None
        if cross_encoder:
            from sentence_transformers import CrossEncoder

            self.cross = CrossEncoder(str(path), device=device, local_files_only=True)
        else:
            self.embedder = EmbeddingBackend(path, device)

    def score(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        if self.embedder is not None:
            vectors = self.embedder.encode([query, *documents])
            scores = vectors[1:] @ vectors[0]
            return [float(s) for s in scores], self.embedder.count_tokens([query, *documents])
        pairs = [(query, document) for document in documents]
        scores = self.cross.predict(pairs, convert_to_numpy=True, show_progress_bar=False)
        encoded = self.cross.tokenizer(
            [query] * len(documents), documents, truncation=True, max_length=512
        )
        tokens = sum(len(ids) for ids in encoded["input_ids"])
        return [float(s) for s in scores.reshape(len(documents), -1)[:, 0]], tokens


@dataclass
class Generation:
    """One generation request, prepared; the counts are filled in as it runs."""

    input_ids: Any
    attention_mask: Any
    max_tokens: int
    options: dict[str, Any]
    stop: list[str]
    seed: int | None
    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "stop"
    # What else the model takes besides the tokens (an image model's pixel values).
    extra_inputs: dict[str, Any] = field(default_factory=dict)
    _stopped: threading.Event = field(default_factory=threading.Event)


def image_parts(messages: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each image part of OpenAI chat messages, with where it is (its `param`)."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict) and part.get("type") == "image_url":
                yield f"messages[{i}].content[{j}].image_url", part


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and "text" in part
        )
    return ""


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    positions = [i for s in stop if (i := text.find(s)) >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


class ChatBackend:
    """A causal language model with its tokenizer's chat template."""

    task: Task = "chat"

    def __init__(self, path: Path, device: str, dtype: str | None) -> None:
        transformers = _transformers()
        self.device = device
        self.tokenizer: Any = transformers.AutoTokenizer.from_pretrained(
            str(path), local_files_only=True
        )
        self.model: Any = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=_torch_dtype(dtype)
        ).to(device)
        self.model.eval()

    def encode(self, body: dict[str, Any], chat: bool) -> Any:
        """The request's prompt as the model's inputs (a BatchEncoding on the CPU)."""
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise WorkerError("'messages' must be a non-empty list", param="messages")
            if not getattr(self.tokenizer, "chat_template", None):
                raise WorkerError("this model has no chat template; use /v1/completions")
            for where, _ in image_parts(messages):  # never dropped in silence
                raise WorkerError(f"Invalid image in '{where}': this model takes no images", where)
            plain = [
                {"role": m.get("role"), "content": _text_of(m.get("content"))}
                for m in messages
                if isinstance(m, dict)
            ]
            prompt = self.tokenizer.apply_chat_template(
                plain, add_generation_prompt=True, tokenize=False
            )
            encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise WorkerError("'prompt' must be a string", param="prompt")
            encoded = self.tokenizer(prompt, return_tensors="pt")
        return encoded

    def prepare(self, body: dict[str, Any], chat: bool) -> Generation:
        encoded = self.encode(body, chat)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is None:
            max_tokens = DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise WorkerError("'max_tokens' must be a positive integer", param="max_tokens")
        temperature = body.get("temperature")
        temperature = 1.0 if temperature is None else float(temperature)
        options: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            options["temperature"] = temperature
            if body.get("top_p") is not None:
                options["top_p"] = float(body["top_p"])
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]
        seed = body.get("seed")
        return Generation(
            input_ids=encoded["input_ids"].to(self.device),
            attention_mask=encoded["attention_mask"].to(self.device),
            extra_inputs=self.extra_inputs(encoded),
            max_tokens=max_tokens,
            options=options,
            stop=stop,
            seed=seed if isinstance(seed, int) else None,
            prompt_tokens=int(encoded["input_ids"].shape[1]),
        )

    def extra_inputs(self, encoded: Any) -> dict[str, Any]:
        """What generate() takes from the encoded prompt besides its tokens: nothing for a text
        model (a tokenizer's token_type_ids are not for generating)."""
        return {}

    def _generate(self, generation: Generation, **extra: Any) -> Any:
        import torch

        transformers = _transformers()

        class _Stop(transformers.StoppingCriteria):  # type: ignore[misc,name-defined]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = generation._stopped.is_set()
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        if generation.seed is not None:
            torch.manual_seed(generation.seed)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.inference_mode():
            return self.model.generate(
                input_ids=generation.input_ids,
                attention_mask=generation.attention_mask,
                max_new_tokens=generation.max_tokens,
                pad_token_id=pad,
                stopping_criteria=transformers.StoppingCriteriaList([_Stop()]),
                **generation.extra_inputs,
                **generation.options,
                **extra,
            )

    def _finish(self, generation: Generation, output: Any, stopped_by_text: bool) -> None:
        generated = int(output.shape[1]) - generation.prompt_tokens
        generation.completion_tokens = generated
        if stopped_by_text:
            generation.finish_reason = "stop"
        elif generated >= generation.max_tokens:
            generation.finish_reason = "length"
        else:
            generation.finish_reason = "stop"

    def complete(self, generation: Generation) -> tuple[str, str, int]:
        output = self._generate(generation)
        new = output[0, generation.prompt_tokens :]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        text, cut = _cut_at_stop(text, generation.stop)
        self._finish(generation, output, cut)
        return text, generation.finish_reason, generation.completion_tokens

    def stream(self, generation: Generation, cancelled: threading.Event) -> Iterator[str]:
        """Text pieces as they are decoded; holds back what could be the start of a stop
        sequence, and stops generating when one appears or the client has gone."""
        streamer = _transformers().TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["output"] = self._generate(generation, streamer=streamer)
            except Exception as exc:
                result["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run, name="generate-inner", daemon=True)
        worker.start()
        hold = max((len(s) for s in generation.stop), default=1) - 1
        text, sent, cut, exhausted = "", 0, False, False
        try:
            for piece in streamer:
                if cancelled.is_set():
                    generation._stopped.set()
                    break
                text += piece
                text_cut, cut = _cut_at_stop(text, generation.stop)
                if cut:
                    generation._stopped.set()
                    yield text_cut[sent:]
                    sent = len(text_cut)
                    break
                safe = len(text) - hold
                if safe > sent:
                    yield text[sent:safe]
                    sent = safe
            else:
                exhausted = True
            if not cut and not cancelled.is_set():
                yield text[sent:]
        finally:
            generation._stopped.set()
            if not exhausted:
                for _ in streamer:  # drain, so the generating thread is never blocked
                    pass
            worker.join()
        if "error" in result:
            raise result["error"]
        self._finish(generation, result["output"], cut)


class SpeechBackend:
    """A Whisper-family model through transformers' automatic-speech-recognition pipeline: audio
    (16 kHz mono WAV, as Hearth sends it) to text with segment (and, asked, word) timestamps."""

    task: Task = "transcription"

    def __init__(self, path: Path, device: str, dtype: str | None) -> None:
        transformers = _transformers()
        self.device = device
        self.processor: Any = transformers.AutoProcessor.from_pretrained(
            str(path), local_files_only=True
        )
        self.model: Any = transformers.AutoModelForSpeechSeq2Seq.from_pretrained(
            str(path), local_files_only=True, dtype=_torch_dtype(dtype)
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


Backend = EmbeddingBackend | RerankBackend | ChatBackend | SpeechBackend
