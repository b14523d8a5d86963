"""The llama-server command line for one model."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from hearth.config import EngineSettings
from hearth.engines.base import Capabilities, EngineCommand, FailureHint, ModelFile
from hearth.engines.llama_cpp.locate import not_installed
from hearth.engines.llama_cpp.slot_cache import SlotCache
from hearth.errors import InvalidRequest, SetupError

POOLING_TYPES = ("none", "mean", "cls", "last", "rank")
# llama-server aborts with a backtrace when an RPC worker does not answer at load.
RPC_FAILURE_HINTS = (
    FailureHint(
        "Failed to connect to",
        "an RPC worker did not answer ({line}): start it with `hearth rpc-worker` on that host, "
        "or correct the model's `rpc:` addresses (`hearth doctor` checks them)",
    ),
)


def bundled_template(name: str) -> Path:
    """Path of a chat template shipped in this package. The engine is given the path, so the
    package must be installed as plain files (pip always does; a zipapp would not work)."""
    path = Path(str(files("hearth.engines.llama_cpp").joinpath("templates", f"{name}.jinja")))
    if not path.is_file():
        raise SetupError(f"chat template {name!r} is missing from the installed package ({path})")
    return path


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter loaded with the model: its id in llama-server is its place in the list."""

    name: str
    path: Path


@dataclass(frozen=True)
class LlamaServerLauncher:
    # None: llama-server is not installed. The catalogue marks such a model unavailable, so the
    # scheduler refuses it before anything would run this launcher.
    binary: Path | None
    model_path: Path
    alias: str
    settings: EngineSettings
    chat_template_file: Path | None = None
    capabilities: Capabilities = field(
        default=Capabilities(chat=True, completion=True, tools=True, token_counting=True)
    )
    kind: str = "llama.cpp"
    task: str = "chat"  # or "embeddings", "rerank": what the model's metadata says it is
    pooling: str | None = None  # from the metadata; llama.cpp's own default when unset
    # Saves the busiest slots when it stops and restores them when it starts (None: off).
    slot_cache: SlotCache | None = None
    rpc: tuple[str, ...] = ()  # RPC workers (host:port) that hold part of the model
    adapters: tuple[LoraAdapter, ...] = ()  # loaded at start, applied per request
    mmproj: Path | None = None  # multimodal projector: chat messages may carry images

    @property
    def model_file(self) -> ModelFile:
        return ModelFile(self.model_path, self.settings, self.chat_template_file)

    def command(self, host: str, port: int) -> EngineCommand:
        if self.binary is None:
            raise SetupError(not_installed(self.alias))
        s = self.settings
        argv = [
            str(self.binary),
            "--model", str(self.model_path),
            "--alias", self.alias,
            "--host", host,
            "--port", str(port),
            "--ctx-size", str(s.ctx_size),
            "--parallel", str(s.parallel),
            "--cont-batching",
            "--metrics",
            "--no-webui",
        ]  # fmt: skip
        if s.threads is not None:
            argv += ["--threads", str(s.threads)]
        if s.gpu_layers is not None:
            argv += ["--gpu-layers", str(s.gpu_layers)]
        if self.rpc:
            # Workers are offload devices, like GPUs: they get the layers --gpu-layers offloads
            # (unset: llama.cpp's "auto", every layer that fits), the rest stays on this CPU.
            argv += ["--rpc", ",".join(self.rpc)]
        if self.task in ("embeddings", "rerank"):
            argv += ["--embedding"] if self.task == "embeddings" else ["--reranking"]
            if self.pooling in POOLING_TYPES:
                argv += ["--pooling", self.pooling]
        elif self.chat_template_file is not None:
            # Jinja templating must be given a template *file*: in this llama.cpp build a bare
            # `--chat-template gemma` is read as the template text and every prompt becomes "gemma".
            argv += ["--jinja", "--chat-template-file", str(self.chat_template_file)]
        else:
            argv += ["--jinja"]
        if self.mmproj is not None and self.task == "chat":
            argv += ["--mmproj", str(self.mmproj)]
        if self.adapters:
            # Loaded at scale 0: the model answers as it would without them unless a request
            # names one (its `lora` field, set by prepare_request).
            for adapter in self.adapters:
                argv += ["--lora", str(adapter.path)]
            argv += ["--lora-init-without-apply"]
        argv += s.extra_args
        return EngineCommand(
            argv=argv,
            health_path="/health",
            hooks=self.slot_cache,
            failure_hints=RPC_FAILURE_HINTS if self.rpc else (),
        )

    def _dimensions(self, body: dict[str, Any]) -> None:
        if body.get("dimensions") is not None:
            raise InvalidRequest(
                f"The model '{self.alias}' (llama.cpp) gives embeddings of its own size and "
                "does not support 'dimensions'; leave it out.",
                param="dimensions",
            )

    def prepare_request(self, body: dict[str, Any]) -> None:
        chosen = body.pop("adapter", None)
        if self.adapters:
            body["lora"] = self._lora(chosen)
        if self.task == "embeddings":
            self._dimensions(body)
            return
        # A prompt prefix reused from the cache is evaluated in a different batch shape, which
        # changes the logits slightly: the same seed then gives a different answer. A seed is a
        # request for reproducibility, so it outranks the cache unless the client chose.
        if body.get("seed") is not None:
            body.setdefault("cache_prompt", False)
        if _held_to_json(body):
            _no_json_gaps(body)
        _images_inline_only(body)

    def _lora(self, chosen: Any) -> list[dict[str, Any]]:
        """llama-server's per-request `lora`: every adapter, at scale 0 but the chosen one. Always
        the whole list, never none: on a request without it llama-server keeps the slot's cached
        prompt, which an adapter request may have computed with the adapter applied."""
        name, scale = (chosen, 1.0) if isinstance(chosen, str) else (None, 0.0)
        if isinstance(chosen, dict):
            name, scale = chosen.get("name"), float(chosen.get("scale", 1.0))
        names = [adapter.name for adapter in self.adapters]
        if name is not None and name not in names:
            raise InvalidRequest(
                f"The model '{self.alias}' has no adapter '{name}'; its adapters: "
                f"{', '.join(names)}.",
                param="adapter",
            )
        return [{"id": i, "scale": scale if n == name else 0.0} for i, n in enumerate(names)]


# Whitespace JSON admits between its tokens but never inside a string (control characters are
# escaped there). llama.cpp's grammar allows up to 20 of these at every gap, in which a small model
# can wander until its token limit (3 answers in 10 of the bundled model at temperature 1): while
# the output is held to a schema they are banned, and single spaces remain.
JSON_GAPS = ("\t", "\n", "\t\t", "\n\n")


def _images_inline_only(body: dict[str, Any]) -> None:
    """Refuse an image this engine would fetch itself: llama-server GETs an http(s) image URL
    from wherever it points, past every check of Hearth's fetcher (upstream/images.py), which
    hands it images as data: URLs."""
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            url = (part.get("image_url") or {}).get("url")
            if not (isinstance(url, str) and url.startswith("data:")):
                where = f"messages[{i}].content[{j}].image_url.url"
                raise InvalidRequest(
                    f"Invalid image in '{where}': this model's engine takes images inline only "
                    "(a data: URL), and Hearth fetches none for it here.",
                    param=where,
                )


def _held_to_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    held = isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")
    return held or body.get("json_schema") is not None


def _no_json_gaps(body: dict[str, Any]) -> None:
    """Ban JSON_GAPS through `logit_bias`, in llama-server's list form ([token or text, bias],
    false: never), keeping the client's own biases (OpenAI's form: token id → bias)."""
    given = body.get("logit_bias") or {}
    if isinstance(given, dict):
        biases = [[int(k) if k.lstrip("-").isdigit() else k, v] for k, v in given.items()]
    else:
        biases = list(given)
    body["logit_bias"] = biases + [[gap, False] for gap in JSON_GAPS]
