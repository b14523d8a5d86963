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


# Whitespace JSON admits between its tokens but never inside a string (control characters are
# escaped there). llama.cpp's grammar allows up to 20 of these at every gap, in which a small model
# can wander until its token limit (3 answers in 10 of the bundled model at temperature 1): while
# the output is held to a schema they are banned, and single spaces remain.
JSON_GAPS = ("\t", "\n", "\t\t", "\n\n")


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
