"""`hearth serve`."""

from __future__ import annotations

import asyncio
import gc
from functools import partial
from pathlib import Path

import click
import uvicorn

from hearth import __version__
from hearth.api.app import create_app
from hearth.auth.access import check_admin_key
from hearth.auth.service import check_exposure
from hearth.cli.options import read_settings, settings_from, settings_options
from hearth.config import Settings
from hearth.deployments.build import build_catalogue
from hearth.engines.llama_cpp.locate import (
    LocatedBinary,
    locate_llama_server,
    optional_llama_server,
)
from hearth.errors import ConfigError, SetupError
from hearth.models.bundled import ensure_bundled_model
from hearth.models.bundled_embeddings import EMBEDDINGS_MODEL_NAME, ensure_embeddings_model
from hearth.observability.logs import configure_logging
from hearth.secrets import resolve_secret


@click.command()
@click.option("--host", help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", "-p", type=int, help="Port to listen on.  [default: 8080]")
@click.option(
    "--no-auth", "no_auth", is_flag=True, default=None,
    help="Serve without API keys even on a non-loopback address (logs a warning).",
)  # fmt: skip
@settings_options
def serve(
    host: str | None,
    port: int | None,
    no_auth: bool | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Serve the OpenAI-compatible API on the bundled model.

    The engine (llama.cpp's llama-server) starts in the background; /ready answers 200 once the
    model is loaded, and requests sent earlier wait for it. Without llama-server and with nothing
    to preload (`preload: []`), Hearth runs as a gateway of remote deployments.
    """
    flags = {"host": host, "port": port, "data_dir": data_dir, "no_auth": no_auth or None}
    settings = settings_from(config_file, **flags)
    configure_logging(settings.log_level, settings.log_format)
    try:
        _check_admin_key(settings)
        asyncio.run(check_exposure(settings))  # before anything binds or loads
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        # First run only (~2 s): done here so a failure is a message, not a lifespan traceback.
        bundled_model = ensure_bundled_model(settings.models_dir)
        # From local files only (the installed package or `hearth setup`'s download): None if
        # there are none, and the embeddings model is then not served.
        embeddings = ensure_embeddings_model(settings.models_dir, settings.cache_dir)
        binary = _llama_server(settings, bundled_model)
    except (SetupError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    base = f"http://{settings.host}:{settings.port}"
    click.echo(f"Hearth {__version__} — OpenAI-compatible API at {base}/v1")
    if binary is not None:
        click.echo(f"  engine: {binary.path} (from {binary.source})")
    else:
        click.echo("  engine: missing (llama-server not found)")
    click.echo(f"  data:   {settings.data_dir}")
    if settings.no_auth:
        # In the banner, not only the log: `log_level: error` must not hide it.
        click.echo(
            "  auth:   OFF (no_auth) — anyone who can reach this address may use every model "
            "and the /admin endpoints"
        )
    if embeddings is None:
        click.echo(
            f"  note:   the embeddings model {EMBEDDINGS_MODEL_NAME} is not prepared yet; "
            "`hearth setup` prepares it"
        )
    click.echo("  press Ctrl-C to stop")
    if binary is None:
        click.echo(
            "warning: local GGUF models cannot be served until `hearth setup` builds llama-server "
            "(or HEARTH_LLAMA_SERVER points at one); remote deployments work.",
            err=True,
        )
    # SIGHUP (or POST /admin/reload) reads the same sources again.
    try:
        app = create_app(
            settings,
            reload_settings=partial(read_settings, config_file, **flags),
        )
    except ConfigError as exc:  # e.g. tracing asked for without its packages
        raise click.ClickException(str(exc)) from None
    # What exists now (modules, routes, schemas) lives as long as the process: frozen, the
    # cyclic collector stops walking it again and again while requests are served.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # On SIGTERM or Ctrl-C: stop accepting, let answers in progress finish for this long,
        # then end the rest with an error (streams: an error event and [DONE]; others: 503).
        timeout_graceful_shutdown=max(1, round(settings.shutdown_drain)),
        access_log=False,  # Hearth logs each request itself, with model, tokens and request id
        log_config=None,  # keep the handlers configure_logging set up
    )


def _check_admin_key(settings: Settings) -> None:
    """The admin key resolves and is long enough: a ConfigError now, not at start-up."""
    if settings.auth.admin_key is not None:
        check_admin_key(resolve_secret(settings.auth.admin_key, "auth.admin_key").reveal())


def _llama_server(settings: Settings, bundled_model: Path) -> LocatedBinary | None:
    """The engine binary, or None when it is missing and no preloaded model needs it: a gateway
    of remote deployments runs without llama.cpp. Else the SetupError saying how to get it.
    The catalogue is built here once, so that a mistake in the models' settings is a message
    before anything binds, not a traceback from the server's start."""
    located = optional_llama_server(settings.llama_server, settings.tools_dir)
    # The catalogue knows which engine serves each preloaded name (or alias).
    catalogue = build_catalogue(settings, None if located is None else located.path, bundled_model)
    if located is None and any(catalogue.local(name).unavailable for name in settings.preload):
        locate_llama_server(settings.llama_server, settings.tools_dir)  # raises, saying how
    return located
