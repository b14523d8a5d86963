"""Aggregate generation throughput (tokens/s) of Hearth, llama-server and llama-cpp-python's server.

Starts the three servers on the bundled Gemma 3 270M model, sends batches of `/v1/completions`
requests at fixed concurrency levels with `hearth.loadgen.load` and writes the table into its own
section of docs/benchmarks.md. Run it with `make bench` (see bench/README.md); it reports, it
never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import hearth
from common import (
    DEFAULT_OUTPUT,
    HOST,
    BenchError,
    Processes,
    Server,
    check_hearth_engine,
    end_token_ids,
    machine,
    machine_line,
    markers,
    prepare_data_dir,
    run_and_report,
    shown,
)
from hearth.config import EngineSettings, Settings
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher, bundled_template
from hearth.engines.llama_cpp.locate import engine_version, locate_llama_server
from hearth.engines.ports import free_port
from hearth.errors import HearthError
from hearth.loadgen.load import LoadProgress, LoadSpec, ProgressCallback, run_load
from hearth.models.bundled import BUNDLED_MODEL_NAME, BUNDLED_TEMPLATE, ensure_bundled_model
from hearth.settings_layers import load_settings

HEARTH = "Hearth"
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
LLAMA_CPP_PYTHON_PIN = "llama-cpp-python[server]==0.3.36"
SECTION = "throughput"
MARK_START, MARK_END = markers(SECTION)
# Printed next to the ratios; a benchmark reports whether they are met, it does not enforce them.
TARGET_VS_LLAMA_SERVER = 0.95  # at every concurrency
TARGET_VS_LLAMA_CPP_PYTHON = 3.0  # from this concurrency on:
TARGET_VS_LLAMA_CPP_PYTHON_FROM = 4
TEMPERATURE = 0.8
# One prompt for every server, sent as text to /v1/completions: no chat template is involved.
PROMPT = (
    "The old lighthouse keeper climbed the spiral stairs one last time, and as the lamp "
    "flickered to life he began to remember"
)


# -- Load ----------------------------------------------------------------------------------------


@dataclass
class Batch:
    server: str
    concurrency: int
    round: int
    requests: int
    completion_tokens: int
    prompt_tokens: int  # of one request, as the server counted it
    wall_s: float
    # requests x max_tokens - completion_tokens: above 0 when some answers ended early (the load
    # generator sums the tokens of a batch, so which answers and how many is not known).
    missing_tokens: int
    latencies_s: list[float] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return self.completion_tokens / self.wall_s


def batch_spec(
    server: Server,
    request: Mapping[str, Any],
    options: Options,
    *,
    requests: int,
    concurrency: int,
    max_tokens: int,
) -> LoadSpec:
    """`requests` identical non-streamed completions for `server`, `concurrency` at a time.

    `request` holds the fields the load generator does not set itself; its `prompt` replaces the
    generated one (see `LoadSpec.body`), so every server gets the same fixed text.
    """
    return LoadSpec(
        url=server.base_url + "/v1",
        model=BUNDLED_MODEL_NAME,
        endpoint="completions",
        stream=False,
        concurrency=concurrency,
        requests=requests,
        max_tokens=max_tokens,
        timeout_s=options.request_timeout,
        extra_body=request,
    )


def run_batch(
    server: Server, spec: LoadSpec, round_: int = 0, progress: ProgressCallback | None = None
) -> Batch:
    """Send the batch with `hearth.loadgen.load` and time it; any failed request ends the run."""
    result = run_load(spec, progress)
    if result.errors:
        kinds = "; ".join(f"{count}x {message}" for message, count in result.error_messages.items())
        raise BenchError(
            f"{server.name}: {result.errors} of {result.requests} requests failed: {kinds}"
        )
    if result.tokens_counted_from != "usage" or result.prompt_tokens is None:
        raise BenchError(f"{server.name} gave no usage in its answers")
    return Batch(
        server=server.name,
        concurrency=spec.concurrency,
        round=round_,
        requests=result.requests,
        completion_tokens=result.output_tokens,
        prompt_tokens=round(result.prompt_tokens),
        wall_s=result.duration_s,
        missing_tokens=result.requests * spec.max_tokens - result.output_tokens,
        latencies_s=sorted(result.latencies_s),
    )


def measure(
    servers: Sequence[Server], request: Mapping[str, Any], options: Options, console: Console
) -> list[Batch]:
    """Warm every server up, then run the rounds, rotating the servers' order each round."""
    top = max(options.concurrency)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )

    batches: list[Batch] = []
    with progress:
        sent = progress.add_task("requests in this batch", total=None)

        def advance(state: LoadProgress) -> None:
            progress.update(sent, completed=state.done, total=state.total)

        warm = progress.add_task("warm-up", total=len(servers))
        for server in servers:
            progress.update(warm, description=f"warm-up: {server.name}")
            warm_load = batch_spec(
                server,
                request,
                options,
                requests=top,
                concurrency=top,
                max_tokens=min(16, options.max_tokens),
            )
            run_batch(server, warm_load, 0, advance)
            progress.advance(warm)
        total = len(options.concurrency) * options.rounds * len(servers)
        task = progress.add_task("measuring", total=total)
        for concurrency in options.concurrency:
            requests = max(options.min_requests, options.requests_factor * concurrency)
            for round_ in range(1, options.rounds + 1):
                shift = (round_ - 1) % len(servers)
                for server in [*servers[shift:], *servers[:shift]]:
                    where = f"c={concurrency} round {round_} {server.name}"
                    progress.update(task, description=where)
                    batch_load = batch_spec(
                        server,
                        request,
                        options,
                        requests=requests,
                        concurrency=concurrency,
                        max_tokens=options.max_tokens,
                    )
                    batch = run_batch(server, batch_load, round_, advance)
                    batches.append(batch)
                    missing = batch.missing_tokens
                    progress.console.print(
                        f"{where:<32} {batch.tok_s:6.1f} tok/s  "
                        f"{batch.completion_tokens} tokens in {batch.wall_s:.1f} s"
                        + (f"  [yellow]ended early: {missing} tokens short[/]" if missing else "")
                    )
                    progress.advance(task)
    return batches


# -- Results -------------------------------------------------------------------------------------


@dataclass
class Cell:
    median: float
    low: float
    high: float


Summary = dict[int, dict[str, Cell]]  # concurrency -> server -> tok/s


def summarise(batches: Sequence[Batch]) -> Summary:
    values: dict[int, dict[str, list[float]]] = {}
    for batch in batches:
        values.setdefault(batch.concurrency, {}).setdefault(batch.server, []).append(batch.tok_s)
    return {
        c: {s: Cell(statistics.median(v), min(v), max(v)) for s, v in row.items()}
        for c, row in values.items()
    }


def _ratio(row: dict[str, Cell], other: str, target: float | None) -> str:
    if HEARTH not in row or other not in row:
        return "n/a"
    value = row[HEARTH].median / row[other].median
    if target is None:
        return f"{value:.2f} (no target)"
    return f"{value:.2f} ({'met' if value >= target else 'MISSED'})"


def table_headers(names: Sequence[str]) -> list[str]:
    out = ["concurrency", *(f"{name} tok/s" for name in names)]
    out.append(f"Hearth / llama-server (target >= {TARGET_VS_LLAMA_SERVER})")
    if LLAMA_CPP_PYTHON in names:
        out.append(
            f"Hearth / llama-cpp-python (target >= {TARGET_VS_LLAMA_CPP_PYTHON:g} "
            f"at concurrency >= {TARGET_VS_LLAMA_CPP_PYTHON_FROM})"
        )
    return out


def table_rows(summary: Summary, names: Sequence[str]) -> list[list[str]]:
    out = []
    for concurrency, row in sorted(summary.items()):
        cells = [str(concurrency)]
        for name in names:
            cell = row.get(name)
            cells.append(
                "n/a" if cell is None else f"{cell.median:.1f} ({cell.low:.1f}-{cell.high:.1f})"
            )
        cells.append(_ratio(row, LLAMA_SERVER, TARGET_VS_LLAMA_SERVER))
        if LLAMA_CPP_PYTHON in names:
            applies = concurrency >= TARGET_VS_LLAMA_CPP_PYTHON_FROM
            cells.append(
                _ratio(row, LLAMA_CPP_PYTHON, TARGET_VS_LLAMA_CPP_PYTHON if applies else None)
            )
        out.append(cells)
    return out


def markdown_section(report: dict[str, Any]) -> str:
    meta, options = report["meta"], report["meta"]["options"]
    names, m = meta["servers"], meta["machine"]
    summary = summarise([Batch(**b) for b in report["batches"]])
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    prompt_tokens = {b["server"]: b["prompt_tokens"] for b in report["batches"]}
    same_prompt = len(set(prompt_tokens.values())) == 1
    lines = [
        MARK_START,
        "## Throughput: Hearth vs llama-server vs llama-cpp-python's server",
        "",
        f"Written by `bench/throughput.py` on {meta['date']}; rerun it rather than editing this "
        "section.",
        "",
        machine_line(m),
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}`",
        f"- **Model:** `{meta['model']}` (the bundled Gemma 3 270M), one file for all servers",
    ]
    if meta["non_default"]:
        lines.append(
            f"- **Non-default settings** ({', '.join(meta['non_default'])}): "
            "a quick check, not a result to hold against the targets."
        )
    lines += [
        "",
        "**Method.** The servers run side by side and are measured one at a time after a "
        "warm-up, in an order rotated every round. A batch is "
        f"max({options['min_requests']}, {options['requests_factor']} x concurrency) identical "
        "non-streamed `/v1/completions` requests (one fixed prompt of "
        + (f"{next(iter(prompt_tokens.values()))} tokens" if same_prompt else "the same text")
        + f", `max_tokens` {options['max_tokens']}, temperature {TEMPERATURE}), `concurrency` "
        "of them in flight at a time, sent by `hearth.loadgen.load` (`hearth bench`'s load "
        "generator: aiohttp, one keep-alive session per batch); the end-of-sequence tokens are "
        "banned with `logit_bias` (plus `ignore_eos` where understood) so every answer runs to "
        "`max_tokens`, and tokens are counted from each answer's `usage.completion_tokens`. "
        "Throughput is a batch's "
        f"completion tokens / its wall time: the median of {options['rounds']} round(s), "
        "min-max in brackets.",
        "",
        "**Servers.**",
        "",
        *(f"- {name}: `{meta['commands'][name]}`" for name in names),
        f"- {meta['engine_check']}",
    ]
    if LLAMA_CPP_PYTHON in names:
        lines.append(
            "- llama-cpp-python is given llama-server's thread count: left alone it generates "
            "on half the cores."
        )
    if not same_prompt:
        lines.append(f"- **The servers counted different prompt tokens:** {prompt_tokens}")
    head = table_headers(names)
    lines += [
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if i <= len(names) else "---" for i in range(len(head))) + "|",
        *("| " + " | ".join(cells) + " |" for cells in table_rows(summary, names)),
    ]
    if missing := sum(b["missing_tokens"] for b in report["batches"]):
        lines += [
            "",
            f"Some answers ended before `max_tokens` ({missing} tokens short in all); the real "
            "counts were used.",
        ]
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    names = report["meta"]["servers"]
    view = Table(
        title="aggregate completion tokens/s: median of rounds (min-max)",
        caption=f"targets: Hearth >= {TARGET_VS_LLAMA_SERVER}x llama-server at every level, "
        f">= {TARGET_VS_LLAMA_CPP_PYTHON:g}x llama-cpp-python "
        f"from c={TARGET_VS_LLAMA_CPP_PYTHON_FROM}",
    )
    short = {LLAMA_SERVER: "H/llama-server", LLAMA_CPP_PYTHON: "H/llama-cpp-python"}
    heads = ["c", *names, *(short[n] for n in names if n in short)]
    for head in heads:
        view.add_column(head, justify="right")
    for cells in table_rows(summarise([Batch(**b) for b in report["batches"]]), names):
        view.add_row(*cells)
    console.print(view)


# -- Command line --------------------------------------------------------------------------------


@dataclass
class Options:
    concurrency: list[int]
    rounds: int
    max_tokens: int
    requests_factor: int
    min_requests: int
    llama_server: Path | None
    parallel: int | None
    ctx_size: int | None
    threads: int | None
    llama_cpp_python_n_ctx: int
    skip_llama_cpp_python: bool
    startup_timeout: float
    request_timeout: float
    output: Path
    json: Path | None


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive")
    return levels


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/throughput.py",
        description="Aggregate tokens/s of Hearth, llama-server and llama-cpp-python's server.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--concurrency", type=_levels, default=[1, 4, 8], help="levels, e.g. 1,4,8")
    p.add_argument("--rounds", type=int, default=3, help="rounds per level; the median is kept")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens generated per request")
    p.add_argument("--requests-factor", type=int, default=2, help="requests = factor x level")
    p.add_argument("--min-requests", type=int, default=4, help="but at least this many")
    p.add_argument("--llama-server", type=Path, help="binary (default: the one Hearth finds)")
    p.add_argument("--parallel", type=int, help="engine slots (default: Hearth's setting)")
    p.add_argument("--ctx-size", type=int, help="engine context (default: Hearth's setting)")
    p.add_argument("--threads", type=int, help="CPU threads (default: llama-server's choice)")
    p.add_argument("--llama-cpp-python-n-ctx", type=int, default=2048, help="its --n_ctx")
    p.add_argument("--skip-llama-cpp-python", action="store_true", help="leave that server out")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds per server")
    p.add_argument("--request-timeout", type=float, default=900.0, help="seconds per request")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    ns = p.parse_args(argv)
    for name in ("rounds", "max_tokens", "requests_factor", "min_requests"):
        if getattr(ns, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(**vars(ns))


def non_default(options: Options) -> list[str]:
    """The measurement settings that differ from the defaults the targets are meant for."""
    defaults = parse_args([])
    keys = ("concurrency", "rounds", "max_tokens", "requests_factor", "min_requests")
    return [
        f"{key.replace('_', '-')} {getattr(options, key)}"
        for key in keys
        if getattr(options, key) != getattr(defaults, key)
    ]


def llama_cpp_python_missing() -> str | None:
    """Why llama-cpp-python's server cannot run here, or None when it can."""
    try:
        importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return "llama-cpp-python is not installed"
    needed = ("uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
    if missing := [m for m in needed if importlib.util.find_spec(m) is None]:
        return f"llama-cpp-python's server extras are missing ({', '.join(missing)})"
    return None


def threads_from_log(log: Path) -> int | None:
    """The thread count llama-server chose (`... n_threads = N` in its log)."""
    with contextlib.suppress(OSError):
        if match := re.search(r"n_threads = (\d+)", log.read_text(errors="replace")):
            return int(match.group(1))
    return None


def engine_settings(settings: Settings, options: Options) -> EngineSettings:
    """Hearth's engine settings with the command line's overrides, validated like Hearth does."""
    overrides = {"parallel": options.parallel, "ctx_size": options.ctx_size}
    overrides["threads"] = options.threads
    values = settings.engine.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    try:
        return EngineSettings.model_validate(values)
    except ValidationError as exc:
        raise BenchError(f"invalid engine settings: {exc}") from None


def hearth_env(binary: Path, engine: EngineSettings) -> dict[str, str]:
    """Hearth's environment: the same engine settings, nothing inherited from HEARTH_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["HEARTH_LLAMA_SERVER"] = str(binary)
    for key, value in engine.model_dump(mode="json").items():
        if value is not None:
            env[f"HEARTH_ENGINE__{key.upper()}"] = (
                json.dumps(value) if isinstance(value, list) else str(value)
            )
    return env


def benchmark(
    options: Options,
    console: Console,
    processes: Processes,
    work: Path,
    settings: Settings,
    names: list[str],
) -> dict[str, Any]:
    """Start the servers, measure them and return the raw report."""
    engine = engine_settings(settings, options)
    binary = locate_llama_server(options.llama_server or settings.llama_server, settings.tools_dir)
    model = ensure_bundled_model(settings.models_dir)
    versions = {HEARTH: hearth.__version__, LLAMA_SERVER: engine_version(binary.path)}
    if LLAMA_CPP_PYTHON in names:
        versions[LLAMA_CPP_PYTHON] = importlib.metadata.version("llama-cpp-python")

    launcher = LlamaServerLauncher(
        binary=binary.path,
        model_path=model,
        alias=BUNDLED_MODEL_NAME,
        settings=engine,
        chat_template_file=bundled_template(BUNDLED_TEMPLATE),
    )
    port = free_port(HOST)
    direct_argv = launcher.command(HOST, port).argv
    direct = Server(LLAMA_SERVER, direct_argv, port, "/health", work / "llama-server.log")
    processes.start(direct, options.startup_timeout)

    data_dir = work / "hearth-data"
    prepare_data_dir(data_dir, model)
    port = free_port(HOST)
    argv = [sys.executable, *f"-m hearth serve --host {HOST} --port {port}".split()]
    argv += ["--data-dir", str(data_dir)]
    env = hearth_env(binary.path, engine)
    hearth_server = Server(HEARTH, argv, port, "/ready", work / "hearth.log", env)
    processes.start(hearth_server, options.startup_timeout)
    assert hearth_server.proc is not None
    engine_pid, engine_check = check_hearth_engine(hearth_server.proc.pid, direct.argv)
    if engine_pid is not None:
        processes.watch(engine_pid)
    console.print(engine_check)
    servers = {LLAMA_SERVER: direct, HEARTH: hearth_server}

    if LLAMA_CPP_PYTHON in names:
        # It defaults to half the cores for generation; give it the thread count llama-server has.
        threads = engine.threads or threads_from_log(direct.log_path) or os.cpu_count() or 1
        port = free_port(HOST)
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
        argv += f"--n_ctx {options.llama_cpp_python_n_ctx} --n_threads {threads}".split()
        argv += f"--n_threads_batch {threads} --host {HOST} --port {port}".split()
        lcp = Server(LLAMA_CPP_PYTHON, argv, port, "/v1/models", work / "llama-cpp-python.log")
        servers[LLAMA_CPP_PYTHON] = lcp
        processes.start(lcp, options.startup_timeout)

    request: dict[str, Any] = {
        "prompt": PROMPT,
        "temperature": TEMPERATURE,
        "ignore_eos": True,  # llama-server's; llama-cpp-python ignores it, hence logit_bias too
        "logit_bias": {str(token): -100 for token in end_token_ids(model)},
    }
    payload = batch_spec(
        direct, request, options, requests=1, concurrency=1, max_tokens=options.max_tokens
    ).body()
    batches = measure([servers[n] for n in names], request, options, console)

    replacements = {
        str(binary.path): "llama-server",
        str(model): "<model.gguf>",
        str(data_dir): "<data-dir>",
        sys.executable: "python",
        str(launcher.chat_template_file): f"<hearth>/{BUNDLED_TEMPLATE}.jinja",
    }
    shown_env = {f"HEARTH_ENGINE__{k.upper()}" for k in ("parallel", "ctx_size", "threads")}
    hearth_settings = " ".join(f"{k}={v}" for k, v in sorted(env.items()) if k in shown_env)
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "versions": versions,
            "python": platform.python_version(),
            "command": shlex.join(["python", "bench/throughput.py", *sys.argv[1:]]),
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "non_default": non_default(options),
            "servers": names,
            "commands": {
                name: (f"{hearth_settings} " if name == HEARTH else "")
                + shown(servers[name].argv, replacements)
                for name in names
            },
            "engine_check": engine_check,
            "model": model.name,
            "payload": payload,
        },
        "batches": [asdict(b) for b in batches],
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    try:
        settings = load_settings()
    except HearthError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    names = [HEARTH, LLAMA_SERVER]
    if options.skip_llama_cpp_python:
        console.print("llama-cpp-python: left out (--skip-llama-cpp-python)")
    elif (why := llama_cpp_python_missing()) is not None:
        console.print(
            f"[yellow]{why}: leaving its column out. Install it with "
            f"`pip install '{LLAMA_CPP_PYTHON_PIN}'` (`make bench` does).[/]"
        )
    else:
        names.append(LLAMA_CPP_PYTHON)

    return run_and_report(
        console,
        section=SECTION,
        output=options.output,
        json_path=options.json,
        measure=lambda processes, work: benchmark(
            options, console, processes, work, settings, names
        ),
        show=show,
        markdown=markdown_section,
    )


if __name__ == "__main__":
    sys.exit(main())
