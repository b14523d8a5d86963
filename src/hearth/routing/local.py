"""Building the catalogue of local models from the settings and the model store."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from hearth.api.openai.protocol import SamplingParams
from hearth.config import BUNDLED_MODEL_NAME, EngineSettings, ModelSettings, Settings
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher, bundled_template
from hearth.errors import ConfigError, ModelNotFound, ModelStoreError, SetupError
from hearth.models.bundled import BUNDLED_TEMPLATE
from hearth.models.gguf_info import GGUFInfo, estimate_memory, read_gguf_info, split_parts
from hearth.models.store import ModelStore
from hearth.routing.catalogue import Catalogue, LocalDeployment

log = logging.getLogger(__name__)


def build_catalogue(settings: Settings, binary: Path, bundled_model: Path) -> Catalogue:
    """Every servable model: the bundled one, each text model in the store under its own name
    with the default settings, and the `models` section of the settings (which wins)."""
    store = ModelStore(settings.models_dir)
    models = {
        stored.name: ModelSettings(model=stored.name)
        for stored in store.list()
        if stored.available and stored.name != BUNDLED_MODEL_NAME
    }
    models[BUNDLED_MODEL_NAME] = ModelSettings(model=BUNDLED_MODEL_NAME)
    models.update(settings.models)
    catalogue = Catalogue()
    for name, model in models.items():
        path, template = _model_file(name, model, bundled_model, store)
        info = _gguf_info(path)
        if info is not None and not {"chat", "completion"} & set(info.capabilities):
            log.info("not serving %s: it is a %s model", name, "/".join(info.capabilities))
            continue
        launcher = LlamaServerLauncher(
            binary=binary,
            model_path=path,
            alias=name,
            settings=model.engine(settings.engine),
            chat_template_file=template,
        )
        try:
            SamplingParams.model_validate({"model": name, **model.defaults})
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise ConfigError(f"models.{name}.defaults.{where}: {problem['msg']}") from None
        keep_alive = settings.keep_alive if model.keep_alive is None else model.keep_alive
        need = _memory_need(path, info, launcher.settings)
        try:
            catalogue.add(
                LocalDeployment(
                    name,
                    launcher,
                    keep_alive,
                    list(model.aliases),
                    memory_bytes=need,
                    slots=launcher.settings.parallel,
                    defaults=dict(model.defaults),
                )
            )
        except ValueError as exc:
            raise ConfigError(f"models.{name}: {exc}") from None
    for name in settings.preload:
        try:
            catalogue.resolve(name)
        except ModelNotFound:
            known = ", ".join(catalogue.names())
            raise ConfigError(f"preload: '{name}' is not a model; known: {known}") from None
    return catalogue


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
