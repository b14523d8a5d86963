"""The command engine as the registry sees it: a model entry whose `command` starts an
OpenAI-compatible server (SGLang, a custom llama.cpp build, TEI, ...), supervised like the
built-in engines: restarted when it dies, probed at its `health_path`. With `task:
transcription` the server is a whisper.cpp server (`whisper-server`), sent multipart forms."""

from __future__ import annotations

import os
import shutil

from hearth.config import ModelSettings
from hearth.engines.base import Capabilities
from hearth.engines.command.launcher import (
    PLACEHOLDERS,
    CommandLauncher,
    placeholders,
    whisper_inference_path,
)
from hearth.engines.spec import OWN_SETTINGS, BuiltEngine, EngineContext, EngineSpec, ModelEntry
from hearth.errors import ConfigError
from hearth.upstream.speech import SpeechForm


def claim(model: ModelSettings, context: EngineContext) -> int | None:
    """An entry that gives a `command` needs no `engine: command`."""
    return OWN_SETTINGS if model.command is not None else None


def build(entry: ModelEntry, context: EngineContext) -> BuiltEngine:
    model = entry.settings
    key = f"models.{entry.name}.command"
    if not model.command:
        raise ConfigError(
            f"{key}: the command engine needs the command line of the server to run, with "
            "{port} where its port goes, e.g. [my-server, --port, '{port}']"
        )
    used = placeholders([*model.command, *model.env.values()])
    if "port" not in used:
        raise ConfigError(
            f"{key}: no {{port}} placeholder: Hearth gives the server a free port at each start "
            "and must tell it which; add e.g. --port {port}"
        )
    unknown = sorted(used - set(PLACEHOLDERS))
    if unknown:
        known = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
        shown = ", ".join(f"{{{name}}}" for name in unknown)
        raise ConfigError(f"{key}: unknown placeholder {shown}; known: {known}")
    program = model.command[0]
    if not placeholders([program]) and shutil.which(program) is None:
        raise ConfigError(f"{key}: {program!r} is neither an executable file nor a program on PATH")
    slots = ENGINE.default_slots
    capabilities = Capabilities.for_task(model.task or "chat", tools=True)
    if model.task == "transcription":
        # A whisper.cpp server: multipart forms to its inference path; it transcribes one
        # request at a time (a lock), so the rest wait in Hearth's queue, by priority.
        form = SpeechForm("whisper.cpp", whisper_inference_path(model.command))
        capabilities = Capabilities(transcription=True, streaming=False, speech_form=form)
        slots = 1
    launcher = CommandLauncher(
        argv=tuple(model.command),
        model=os.path.expanduser(model.model),
        alias=entry.name,
        capabilities=capabilities,
        health_path=model.health_path or "/health",
        served_model=model.served_model,
        env=dict(model.env),
    )
    return BuiltEngine(launcher, int(model.memory or 0), entry.slots(slots))


ENGINE = EngineSpec(names=("command",), build=build, default_slots=4, claim=claim)
