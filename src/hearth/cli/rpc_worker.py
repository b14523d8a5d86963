"""`hearth rpc-worker`: lend this machine's memory (and GPUs) to a Hearth elsewhere by running
llama.cpp's rpc-server, which holds and computes the layers that Hearth's engine sends it."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import click

from hearth.cli.options import settings_from, settings_options
from hearth.engines.llama_cpp.locate import locate_rpc_server
from hearth.engines.process import describe_exit, die_with_parent_hook
from hearth.errors import SetupError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50052
# Signals a supervisor or a terminal sends to stop us; rpc-server gets each one we get.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def exposure_warning(host: ipaddress.IPv4Address, port: int) -> str | None:
    """What to tell whoever binds the worker beyond loopback; None on loopback."""
    if host.is_loopback:
        return None
    where = "every network interface" if host.is_unspecified else f"{host}"
    return (
        f"WARNING: this RPC worker listens on {where}, port {port}.\n"
        "llama.cpp's RPC protocol has NO authentication and NO encryption: anyone who can reach "
        "this port can allocate this machine's memory, read and overwrite the tensors in it and "
        "run computations on it, and llama.cpp calls the protocol experimental and not secure.\n"
        "Only expose it on a private network you trust, or keep it on 127.0.0.1 and reach it "
        "through an SSH or WireGuard tunnel; firewall the port from everything else."
    )


def rpc_server_argv(
    binary: Path,
    host: ipaddress.IPv4Address,
    port: int,
    *,
    threads: int | None = None,
    devices: str | None = None,
    cache: bool = False,
) -> list[str]:
    argv = [str(binary), "--host", str(host), "--port", str(port)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if devices:
        argv += ["--device", devices]
    if cache:
        argv.append("--cache")
    return argv


def cache_root(data_dir: Path) -> Path:
    """LLAMA_CACHE for rpc-server, which keeps its tensor cache in an `rpc` folder below it."""
    return data_dir / "llama.cpp"


def run_supervised(argv: list[str], env: dict[str, str]) -> int:
    """Run rpc-server until it exits, passing on every stop signal we get; returns our exit
    status: 0 when it ended because it was asked to, else its own (128 + signal if killed)."""
    try:
        # Its own session, so a terminal's Ctrl-C reaches it once, from us; and it dies with us.
        child = subprocess.Popen(
            argv, env=env, start_new_session=True, preexec_fn=die_with_parent_hook()
        )
    except OSError as exc:
        raise click.ClickException(f"cannot run {argv[0]}: {exc.strerror}") from None
    asked: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        asked.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if asked and code in (0, *(-sig for sig in asked)):
        click.echo("rpc-server stopped", err=True)
        return 0
    click.echo(f"rpc-server {describe_exit(code)}", err=True)
    return 128 - code if code < 0 else code


def _ipv4(ctx: click.Context, param: click.Parameter, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an IPv4 address; rpc-server binds IPv4 addresses only "
            "(127.0.0.1, this machine's private address such as 10.0.0.2, or 0.0.0.0 for all)"
        ) from None


@click.command("rpc-worker")
@click.option(
    "--host", default=DEFAULT_HOST, show_default=True, callback=_ipv4,
    help="IPv4 address to listen on. Anything but loopback exposes an unauthenticated protocol: "
    "use a private network or a tunnel.",
)  # fmt: skip
@click.option(
    "--port", "-p", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
    help="TCP port to listen on.",
)  # fmt: skip
@click.option(
    "--threads", "-t", type=click.IntRange(min=1),
    help="CPU threads for computing on the CPU.  [default: half the cores]",
)  # fmt: skip
@click.option(
    "--device", "-d", "devices",
    help="Comma-separated ggml devices to lend, e.g. CUDA0,CUDA1.  [default: every GPU, else "
    "the CPU]",
)  # fmt: skip
@click.option(
    "--cache", is_flag=True,
    help="Keep the tensors received in a cache under the data folder, so the next load of "
    "the same model skips sending them.",
)  # fmt: skip
@settings_options
def rpc_worker(
    host: ipaddress.IPv4Address,
    port: int,
    threads: int | None,
    devices: str | None,
    cache: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Lend this machine's memory and GPUs to a Hearth on another machine.

    Runs llama.cpp's rpc-server (built by `hearth setup` beside llama-server). On the Hearth
    machine, list the worker in a model entry, and the engine puts the model's layers on it:

    \b
      models:
        big-model:
          model: /models/big.gguf
          rpc: ["10.0.0.2:50052"]

    The RPC protocol has no authentication: bind to a private address (--host 10.0.0.2) or keep
    the default 127.0.0.1 and tunnel to it. Stops on SIGTERM or Ctrl-C. See docs/engines.md.
    """
    settings = settings_from(config_file, data_dir=data_dir)
    try:
        binary = locate_rpc_server(settings.rpc_server, settings.tools_dir).path
    except SetupError as exc:
        raise click.ClickException(str(exc)) from None
    warning = exposure_warning(host, port)
    if warning is not None:
        click.secho(warning, err=True, fg="red", bold=True)
    env = dict(os.environ)
    click.echo(f"Hearth RPC worker: rpc-server ({binary}) on {host}:{port}")
    if cache:
        env["LLAMA_CACHE"] = str(cache_root(settings.data_dir))
        click.echo(f"  tensor cache: {cache_root(settings.data_dir) / 'rpc'}")
    address = "<this machine's address>" if host.is_unspecified else str(host)
    click.echo(f'  in the model entry of the Hearth that uses it: rpc: ["{address}:{port}"]')
    click.echo("  press Ctrl-C to stop")
    sys.stdout.flush()
    argv = rpc_server_argv(binary, host, port, threads=threads, devices=devices, cache=cache)
    raise SystemExit(run_supervised(argv, env))
