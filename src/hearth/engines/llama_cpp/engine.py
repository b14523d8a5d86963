"""The llama.cpp engine as the registry sees it: a GGUF (stored, bundled or a path) served by
llama-server, with the chat template, GPU layers, task and memory estimate that follow from the
file's metadata and the machine."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from hearth.config import BUNDLED_MODEL_NAME, EngineSettings, ModelSettings, Settings
from hearth.engines.base import Capabilities
from hearth.engines.gpu import Accelerators, default_gpu_layers
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher, LoraAdapter, bundled_template
from hearth.engines.llama_cpp.locate import engine_version, locate_llama_server, not_installed
from hearth.engines.llama_cpp.slot_cache import SlotCache
from hearth.engines.prompt_cache import PromptCache
from hearth.engines.spec import FORMAT, BuiltEngine, EngineContext, EngineSpec, ModelEntry
from hearth.engines.status import EngineStatus
from hearth.errors import ConfigError, ModelStoreError, SetupError
from hearth.models.adapters import AdapterStore, check_adapter_file
from hearth.models.bundled import BUNDLED_TEMPLATE
from hearth.models.bundled_embeddings import EMBEDDINGS_MODEL_NAME
from hearth.models.gguf_info import GGUFInfo, estimate_memory, read_gguf_info, split_parts
from hearth.models.projector import ProjectorInfo, read_projector
from hearth.models.store import ModelStore

log = logging.getLogger(__name__)


def claim(model: ModelSettings, context: EngineContext) -> int | None:
    """Every GGUF: the bundled models, a stored one, or a path ending in .gguf."""
    bundled = model.model in (BUNDLED_MODEL_NAME, EMBEDDINGS_MODEL_NAME)
    stored = bundled or model.model in context.store
    return FORMAT if stored or Path(model.model).expanduser().suffix == ".gguf" else None


def build(entry: ModelEntry, context: EngineContext) -> BuiltEngine:
    """llama-server for the entry's GGUF. Without llama-server (a gateway) the model is still
    listed, but marked unavailable with the way to get it."""
    model = entry.settings
    path, template = _model_file(entry.name, model, context.bundled_model, context.store)
    info = _gguf_info(path)
    engine = _with_gpu_defaults(
        model.engine_settings(context.settings.engine), context.accelerators
    )
    launcher = _launcher(context.llama_server, path, entry.name, engine, template, info, model)
    adapters = _adapters(entry.name, model, context, path, launcher.task)
    launcher = replace(launcher, adapters=adapters)
    projector = _projector(entry.name, model, context.store, launcher.task)
    if projector is not None:
        vision = "vision" in projector.capabilities
        capabilities = replace(launcher.capabilities, vision=vision)
        launcher = replace(launcher, mmproj=projector.path, capabilities=capabilities)
    # A saved slot may hold a prompt computed with an adapter applied, which llama-server would
    # then reuse for the base model: no slot cache for a model with adapters.
    if launcher.task == "chat" and context.settings.prompt_cache_max > 0 and not adapters:
        cache = PromptCache(context.settings.prompt_cache_dir, context.settings.prompt_cache_max)
        slots = SlotCache(cache, entry.name, path, context.llama_server, engine)
        launcher = replace(launcher, slot_cache=slots)
    return BuiltEngine(
        launcher,
        _memory_need(path, info, engine) + (_size(projector.path) if projector else 0),
        engine.parallel,
        unavailable=not_installed(entry.name) if context.llama_server is None else None,
        adapters=tuple(adapter.name for adapter in adapters),
    )


def _adapters(
    name: str, model: ModelSettings, context: EngineContext, path: Path, task: str
) -> tuple[LoraAdapter, ...]:
    """The LoRA adapters of an entry: those stored with its model (`hearth adapter add`), then
    the entry's `adapters` setting (which wins for a name in both)."""
    found: dict[str, Path] = {}
    if model.model in context.store:
        stored = AdapterStore(context.settings.models_dir).list(model.model)
        found |= {a.name: a.path for a in stored if a.path.is_file()}
    for adapter, file in model.adapters.items():
        where = f"models.{name}.adapters.{adapter}"
        candidate = Path(file).expanduser()
        if not candidate.is_file():
            raise ConfigError(
                f"{where}: {file!r} is not a file; give a LoRA GGUF (`hearth adapter add` "
                "converts a PEFT adapter folder and stores it with the model)"
            )
        try:
            check_adapter_file(candidate, path)
        except ModelStoreError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        found[adapter] = candidate
    if found and task != "chat":
        raise ConfigError(
            f"models.{name}: LoRA adapters change chat models; this one serves {task}"
        )
    return tuple(LoraAdapter(adapter, file) for adapter, file in found.items())


def _projector(
    name: str, model: ModelSettings, store: ModelStore, task: str
) -> ProjectorInfo | None:
    """The multimodal projector a chat model is started with: the entry's `mmproj`, else the one
    stored with the model. A stored one that went missing is logged and left out (the model then
    serves text, and an image gets the capability error); a configured one must be right."""
    if model.mmproj is not None:
        where = f"models.{name}.mmproj"
        if task != "chat":
            raise ConfigError(
                f"{where}: a projector gives a chat model sight; this one serves {task}"
            )
        candidate = Path(model.mmproj).expanduser()
        if not candidate.is_file():
            raise ConfigError(
                f"{where}: {model.mmproj!r} is not a file; give the model's mmproj-*.gguf"
            )
        try:
            return read_projector(candidate)
        except ModelStoreError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if task != "chat" or model.model not in store:
        return None
    stored = store.get(model.model).projector
    if stored is None:
        return None
    try:
        return read_projector(stored)
    except ModelStoreError as exc:
        log.warning("%s: its projector is left out, so it cannot see images: %s", name, exc)
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def status(name: str, settings: Settings, accelerators: Accelerators) -> EngineStatus:
    try:
        found = locate_llama_server(settings.llama_server, settings.tools_dir)
        version = engine_version(found.path)
    except SetupError as exc:
        return EngineStatus(name, False, None, str(exc), required=True)
    return EngineStatus(name, True, version, f"{found.path} (from {found.source})", required=True)


ENGINE = EngineSpec(
    names=("llama.cpp",),
    build=build,
    # Its slots are llama-server's --parallel: the entry's, else the top-level engine section's.
    default_slots=EngineSettings().parallel,
    claim=claim,
    status=status,
)


def _launcher(
    binary: Path | None,
    path: Path,
    name: str,
    engine: EngineSettings,
    template: Path | None,
    info: GGUFInfo | None,
    model: ModelSettings,
) -> LlamaServerLauncher:
    """llama-server for a GGUF: a text model chats; an embedding or reranker model (by its
    metadata, or the entry's `task`) is started with --embedding or --reranking."""
    found = set(info.capabilities) if info is not None else {"chat", "completion"}
    task = model.task or (
        "rerank" if "rerank" in found else "embeddings" if "embeddings" in found else "chat"
    )
    if task == "chat":
        # llama-server falls back to a generic template when the model has none.
        capabilities = Capabilities(
            chat=True,
            completion=True,
            tools=True,
            token_counting=True,
            json_schema=True,
            adapters=True,
        )
    else:
        capabilities = Capabilities(
            embeddings=task == "embeddings", rerank=task == "rerank", token_counting=True
        )
    return LlamaServerLauncher(
        binary=binary,
        model_path=path,
        alias=name,
        settings=engine,
        chat_template_file=template if task == "chat" else None,
        capabilities=capabilities,
        task=task,
        pooling=info.pooling_type if info is not None else None,
        rpc=tuple(model.rpc),
    )


def _with_gpu_defaults(engine: EngineSettings, accelerators: Accelerators) -> EngineSettings:
    """Offload every layer to a GPU when there is one and the settings leave gpu_layers unset."""
    if engine.gpu_layers is not None:
        return engine
    layers = default_gpu_layers(accelerators)
    return engine if layers is None else engine.model_copy(update={"gpu_layers": layers})


def _gguf_info(path: Path) -> GGUFInfo | None:
    try:
        return read_gguf_info(path)
    except ModelStoreError as exc:
        log.warning("cannot read the metadata of %s: %s", path, exc)
        return None


def _memory_need(path: Path, info: GGUFInfo | None, engine: EngineSettings) -> int:
    """Estimated memory of the model loaded with these settings (weights + KV cache + compute);
    the file size alone when its metadata cannot be read."""
    size = sum(part.stat().st_size for part in split_parts(path) if part.is_file())
    if info is None:
        return size
    return estimate_memory(info, size, engine.ctx_size, engine.parallel)


def _model_file(
    name: str, model: ModelSettings, bundled_model: Path, store: ModelStore
) -> tuple[Path, Path | None]:
    """The GGUF a model entry refers to, and the chat template to give the engine (if any)."""
    template: Path | None = None
    if model.model == BUNDLED_MODEL_NAME:
        # The bundled GGUF has no chat template of its own.
        path, template = bundled_model, bundled_template(BUNDLED_TEMPLATE)
    elif model.model in store:
        path = store.get(model.model).path
        if _same_file(path, bundled_model):
            # A copy of the bundled model (Ollama's /api/copy): it needs the same template.
            template = bundled_template(BUNDLED_TEMPLATE)
    elif model.model == EMBEDDINGS_MODEL_NAME:  # in the store once prepared
        raise SetupError(
            f"the bundled embeddings model '{EMBEDDINGS_MODEL_NAME}' is not prepared yet; "
            "`hearth setup` prepares it (downloading its weights, 83 MB, once)"
        )
    else:
        path = Path(model.model).expanduser()
        if path.suffix != ".gguf" or not path.is_file():
            raise ConfigError(
                f"models.{name}.model: {model.model!r} is not a stored model (see `hearth ls`; "
                "get one with `hearth pull` or `hearth import`) nor an existing .gguf file"
            )
    if model.chat_template is not None:
        candidate = Path(model.chat_template).expanduser()
        try:
            template = candidate if candidate.is_file() else bundled_template(model.chat_template)
        except SetupError:
            raise ConfigError(
                f"models.{name}.chat_template: {model.chat_template!r} is neither a file nor a "
                f"template shipped with Hearth ({BUNDLED_TEMPLATE})"
            ) from None
    return path, template


def _same_file(path: Path, other: Path) -> bool:
    try:
        return path.samefile(other)
    except OSError:
        return False
