"""The interface every engine launcher implements: command line, readiness probe, capabilities."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hearth.config import EngineSettings
from hearth.upstream.speech import SpeechForm

# What routing checks a model serves, and what model listings show (tools and vision included).
LISTED = ("chat", "completion", "embeddings", "rerank", "transcription", "tools", "vision")


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can be asked for, as data: endpoints check these before forwarding,
    and protocols ask them instead of asking which engine it is."""

    chat: bool = False
    completion: bool = False
    embeddings: bool = False
    rerank: bool = False
    transcription: bool = False  # speech to text: /v1/audio/transcriptions and /translations
    tools: bool = False  # passes `tools` to the model's chat template
    streaming: bool = True  # chat and completion answers can be streamed
    vision: bool = False  # chat messages may carry images
    # The engine renders a conversation with the model's template and tokenizes it (llama-server's
    # /apply-template and /tokenize), so input tokens can be counted exactly without generating.
    token_counting: bool = False
    # The engine accepts a per-request `json_schema` that constrains what it generates (llama.cpp
    # compiles it to a grammar): Hearth forces tool calls with it (routing/constrained.py).
    json_schema: bool = False
    # The engine loads LoRA adapters with the model and applies one per request (llama.cpp's
    # per-request `lora`): a model on it may have adapters attached (models/adapters.py).
    adapters: bool = False
    # How it takes a transcription when not as Hearth's JSON body (the transformers worker's):
    # a multipart form, as a whisper.cpp server run by the command engine does.
    speech_form: SpeechForm | None = None

    @classmethod
    def named(cls, names: Iterable[str]) -> Capabilities:
        """The capabilities settings list by name (a remote deployment's `capabilities`)."""
        flags: dict[str, Any] = dict.fromkeys(names, True)
        return cls(**flags)

    @classmethod
    def for_task(cls, task: str, tools: bool = False) -> Capabilities:
        """What a model serving one task (chat, embeddings, rerank) can be asked for."""
        if task == "embeddings":
            return cls(embeddings=True)
        if task == "rerank":
            return cls(rerank=True)
        return cls(chat=True, completion=True, tools=tools)

    def names(self) -> list[str]:
        """The tasks it serves (chat, completion, embeddings, rerank, transcription), `tools`
        and `vision`."""
        return [name for name in LISTED if getattr(self, name)]


@dataclass(frozen=True)
class ModelFile:
    """The one file on disk an engine loads a model from (a GGUF), with the chat template and
    the settings it is loaded with: what Ollama's listings show about a local model."""

    path: Path
    settings: EngineSettings
    chat_template: Path | None = None


class ProcessHooks(Protocol):
    """Work an engine wants done around one process's life, by the supervisor that runs it.
    `name` is the supervisor's (the model's, or `model#i` for a replica), stable across loads.

    The supervisor bounds each coroutine in time and logs, never raises, what goes wrong: a hook
    may make the next load faster, never stop one from happening."""

    def start_args(self, name: str) -> list[str]:
        """Flags added to the command line of each start (may prepare folders they name)."""
        ...

    async def after_ready(self, name: str, base_url: str) -> None:
        """Once the engine answers its health probe, before requests are let through."""
        ...

    async def before_stop(self, name: str, base_url: str) -> None:
        """When a live, ready engine is about to be stopped (never after a crash)."""
        ...


@dataclass(frozen=True)
class FailureHint:
    """A known way an engine fails to start: when its log holds `needle`, the start error leads
    with `hint`, where `{line}` is the log's words from the needle to the end of its line (the
    cause is often buried under a backtrace the engine prints as it aborts)."""

    needle: str
    hint: str

    def explain(self, log_text: str) -> str | None:
        at = log_text.rfind(self.needle)
        if at < 0:
            return None
        line = log_text[at:].splitlines()[0].strip()
        return self.hint.format(line=line)


@dataclass(frozen=True)
class EngineCommand:
    """How to start one engine process listening on a given port."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health_path: str = "/health"
    # What to tell the user when the health path answers 404 (the server has no such endpoint).
    health_hint: str = ""
    hooks: ProcessHooks | None = None
    # The CPU cores the process may run on (a replica's share); None: the OS decides.
    cpus: frozenset[int] | None = None
    failure_hints: tuple[FailureHint, ...] = ()

    def explain_failure(self, log_text: str) -> str | None:
        """The first known cause found in the log of a failed start, in words a user can act on."""
        for hint in self.failure_hints:
            explained = hint.explain(log_text)
            if explained is not None:
                return explained
        return None


class Launcher(Protocol):
    """Builds the command for one model on one engine kind."""

    @property
    def kind(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def model_file(self) -> ModelFile | None:
        """The model file it loads, when it is one file on disk (a GGUF); else None."""
        ...

    def command(self, host: str, port: int) -> EngineCommand: ...

    def prepare_request(self, body: dict[str, Any]) -> None:
        """Adjust an OpenAI request body, in place, for this engine's quirks."""
        ...
