"""`hearth bench`: load-test any OpenAI-compatible server and report rates and latencies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hearth.config import parse_duration
from hearth.loadgen import DEFAULT_REQUESTS

if TYPE_CHECKING:  # the load generator (aiohttp, rich) is imported when the command runs
    from rich.console import Console

    from hearth.loadgen.load import LoadResult, LoadSpec

_URL = re.compile(r"^https?://[^\s/]+")


def _url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _URL.match(value):
        raise click.BadParameter(
            f"{value!r} is not an http:// or https:// base URL, e.g. http://127.0.0.1:8080/v1"
        )
    return value


def _levels(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of whole numbers, e.g. 1,4,8"
        ) from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"levels must be 1 or more, not {value!r}")
    return levels


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration")
    return seconds


@click.command()
@click.option(
    "--url",
    required=True,
    callback=_url,
    help="Base URL of the OpenAI API, e.g. http://127.0.0.1:8080/v1.",
)
@click.option("--model", "-m", required=True, help="Model name to send.")
@click.option("--api-key", help="Sent as 'Authorization: Bearer KEY'.")
@click.option(
    "--endpoint",
    type=click.Choice(["chat", "completions"]),
    default="chat",
    show_default=True,
    help="/chat/completions or /completions.",
)
@click.option(
    "--concurrency",
    "-c",
    "levels",
    default="1",
    show_default=True,
    callback=_levels,
    help="Requests in flight at once; several (1,4,8) make a sweep.",
)
@click.option(
    "--requests",
    "-n",
    type=click.IntRange(min=1),
    help=f"Measured requests per level.  [default: {DEFAULT_REQUESTS}]",
)
@click.option(
    "--duration",
    "-d",
    callback=_duration,
    help="Or measure each level for this long, e.g. 30s or 2m.",
)
@click.option(
    "--prompt-tokens",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Approximate prompt length in tokens.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Tokens to generate per request.",
)
@click.option(
    "--stream/--no-stream",
    default=True,
    show_default=True,
    help="Stream the answers (measures time to first token too).",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Requests sent before each level is measured, not counted.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds one request may take.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Also write the results as JSON to FILE ('-': stdout, the table on stderr).",
)
def bench(
    url: str,
    model: str,
    api_key: str | None,
    endpoint: str,
    levels: list[int],
    requests: int | None,
    duration: float | None,
    prompt_tokens: int,
    max_tokens: int,
    stream: bool,
    warmup: int,
    timeout: float,
    json_path: str | None,
) -> None:
    """Load-test an OpenAI-compatible server (Hearth or any other).

    Reports, per concurrency level: requests, errors, requests/s, output tokens/s (from usage,
    else counted stream chunks), time to first token (streams) and end-to-end latency. Failed
    requests are counted and their first messages shown; the exit status is 1 when none
    succeeded.

    \b
    Example:
      hearth bench --url http://127.0.0.1:8080/v1 --model gemma-3-270m -c 1,4,8 -n 32
    """  # fmt: skip
    if requests is not None and duration is not None:
        raise click.UsageError("--requests and --duration exclude each other; give one.")
    from rich.console import Console

    from hearth.loadgen.load import LoadSpec
    from hearth.loadgen.report import document, show

    spec = LoadSpec(
        url=url,
        model=model,
        api_key=api_key,
        endpoint="chat" if endpoint == "chat" else "completions",
        concurrency=levels[0],
        requests=requests,
        duration_s=duration,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        stream=stream,
        warmup=warmup,
        timeout_s=timeout,
    )
    to_stdout = json_path == "-"
    console = Console(stderr=to_stdout)
    results = _run(console, spec, levels)
    show(console, spec, results)
    if json_path is not None:
        text = json.dumps(document(spec, results), indent=2) + "\n"
        if to_stdout:
            click.echo(text, nl=False)
        else:
            Path(json_path).write_text(text, encoding="utf-8")
            console.print(f"results written to {json_path}")
    if not any(result.ok for result in results):
        raise click.exceptions.Exit(1)


def _run(console: Console, spec: LoadSpec, levels: list[int]) -> list[LoadResult]:
    """Run the sweep, with a progress bar when someone is watching."""
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from hearth.loadgen.load import LoadProgress, run_sweep

    if not console.is_terminal:
        return run_sweep(spec, levels)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[done]} done, {task.fields[errors]} errors"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[int, TaskID] = {}

    def update(state: LoadProgress) -> None:
        if state.concurrency not in tasks:
            total = state.total if state.total is not None else state.duration_s
            tasks[state.concurrency] = bar.add_task(
                f"concurrency {state.concurrency}", total=total, done=0, errors=0
            )
        completed = state.done if state.total is not None else state.elapsed_s
        bar.update(
            tasks[state.concurrency], completed=completed, done=state.done, errors=state.errors
        )

    with bar:
        return run_sweep(spec, levels, update)
