"""Building the catalogue from the settings and the model store: local models, remote
deployments and the routes over them."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from hearth.config import BUNDLED_MODEL_NAME, EngineSettings, ModelSettings, Settings
from hearth.deployments.catalogue import Catalogue
from hearth.deployments.deployment import LocalDeployment
from hearth.deployments.local_engines import build_launcher, choose_engine
from hearth.deployments.remote import add_remote_deployments, add_routes
from hearth.engines.base import Capabilities, Launcher
from hearth.engines.gpu import Accelerators, default_gpu_layers, detect_accelerators
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher, bundled_template
from hearth.engines.llama_cpp.locate import not_installed
from hearth.errors import ConfigError, ModelNotFound, ModelStoreError, SetupError
from hearth.models.bundled import BUNDLED_TEMPLATE
from hearth.models.gguf_info import GGUFInfo, estimate_memory, read_gguf_info, split_parts
from hearth.models.store import ModelStore
from hearth.wire.base import SamplingParams

log = logging.getLogger(__name__)


def build_catalogue(settings: Settings, binary: Path | None, bundled_model: Path) -> Catalogue:
    """Every servable model: the bundled one, each text model in the store under its own name
    with the default settings, and the `models` section of the settings (which wins); then the
    remote deployments and the routes. Without llama-server (`binary` None: a gateway) the
    llama.cpp models are still listed, but marked unavailable."""
    store = ModelStore(settings.models_dir)
    models = {
        stored.name: ModelSettings(model=stored.name)
        for stored in store.list()
        if stored.available and stored.name != BUNDLED_MODEL_NAME
    }
    models[BUNDLED_MODEL_NAME] = ModelSettings(model=BUNDLED_MODEL_NAME)
    models.update(settings.models)
    catalogue = Catalogue(settings.routing.breaker)
    accelerators = detect_accelerators()
    for name, model in models.items():
        launcher: Launcher
        unavailable: str | None = None
        in_store = model.model == BUNDLED_MODEL_NAME or model.model in store
        engine = choose_engine(name, model, in_store, accelerators)
        if engine == "llama.cpp":
            path, template = _model_file(name, model, bundled_model, store)
            info = _gguf_info(path)
            engine_settings = _with_gpu_defaults(
                model.engine_settings(settings.engine), accelerators
            )
            launcher = _llama_launcher(binary, path, name, engine_settings, template, info, model)
            need = _memory_need(path, info, engine_settings)
            slots = engine_settings.parallel
            if binary is None:
                unavailable = not_installed(name)
        else:
            launcher, need, slots = build_launcher(name, model, engine, settings, accelerators)
        try:
            SamplingParams.model_validate({"model": name, **model.defaults})
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise ConfigError(f"models.{name}.defaults.{where}: {problem['msg']}") from None
        keep_alive = settings.keep_alive if model.keep_alive is None else model.keep_alive
        try:
            catalogue.add(
                LocalDeployment(
                    name,
                    launcher,
                    keep_alive,
                    list(model.aliases),
                    memory_bytes=need,
                    slots=slots,
                    defaults=dict(model.defaults),
                    price=model.price,
                    unavailable=unavailable,
                )
            )
        except ValueError as exc:
            raise ConfigError(f"models.{name}: {exc}") from None
    add_remote_deployments(catalogue, settings)
    add_routes(catalogue, settings)
    for name in settings.preload:
        try:
            catalogue.local(name)
        except ModelNotFound:
            known = ", ".join(d.name for d in catalogue.deployments())
            raise ConfigError(f"preload: '{name}' is not a local model; known: {known}") from None
    return catalogue


def _llama_launcher(
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
        capabilities = Capabilities(chat=True, completion=True, tools=True)
    else:
        capabilities = Capabilities(embeddings=task == "embeddings", rerank=task == "rerank")
    return LlamaServerLauncher(
        binary=binary,
        model_path=path,
        alias=name,
        settings=engine,
        chat_template_file=template if task == "chat" else None,
        capabilities=capabilities,
        task=task,
        pooling=info.pooling_type if info is not None else None,
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
