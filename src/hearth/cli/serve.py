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
from hearth.cli.options import read_settings, settings_from, settings_options
from hearth.engines.llama_cpp.locate import locate_llama_server
from hearth.errors import ConfigError, SetupError
from hearth.models.bundled import ensure_bundled_model
from hearth.observability.logs import configure_logging
from hearth.usage.accounting import check_exposure


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
    model is loaded, and requests sent earlier wait for it.
    """
    flags = {"host": host, "port": port, "data_dir": data_dir, "no_auth": no_auth or None}
    settings = settings_from(config_file, **flags)
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(check_exposure(settings))  # before anything binds or loads
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        binary = locate_llama_server(settings.llama_server, settings.tools_dir)
        # First run only (~2 s): done here so a failure is a message, not a lifespan traceback.
        ensure_bundled_model(settings.models_dir)
    except SetupError as exc:
        raise click.ClickException(str(exc)) from None
    base = f"http://{settings.host}:{settings.port}"
    click.echo(f"Hearth {__version__} — OpenAI-compatible API at {base}/v1")
    click.echo(f"  engine: {binary.path} (from {binary.source})")
    click.echo(f"  data:   {settings.data_dir}")
    click.echo("  press Ctrl-C to stop")
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
        timeout_graceful_shutdown=int(settings.engine.shutdown_grace) + 5,
        access_log=False,  # Hearth logs each request itself, with model, tokens and request id
        log_config=None,  # keep the handlers configure_logging set up
    )
