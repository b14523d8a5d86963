"""The models behind the transformers worker: embeddings and reranking through
sentence-transformers, generation through transformers (image-text-to-text in vision.py, speech
recognition in speech.py). Imported only by the worker process."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.engines.transformers.folder import Task

DEFAULT_MAX_TOKENS = 256


def load_transformers() -> Any:
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


def torch_dtype(dtype: str | None) -> Any:
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
        transformers = load_transformers()
        self.device = device
        self.tokenizer: Any = transformers.AutoTokenizer.from_pretrained(
            str(path), local_files_only=True
        )
        self.model: Any = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch_dtype(dtype)
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

        transformers = load_transformers()

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
        streamer = load_transformers().TextIteratorStreamer(
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
