"""How `hearth bench` shows its results: a rich table, the errors seen, a JSON document."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

import hearth
from hearth.loadgen.load import LoadResult, LoadSpec, Percentiles

SCHEMA = "hearth.loadgen/1"


def document(spec: LoadSpec, results: Sequence[LoadResult]) -> dict[str, Any]:
    """The JSON report: what was sent (never the API key) and one summary per level."""
    return {
        "schema": SCHEMA,
        "hearth_version": hearth.__version__,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "spec": {
            "url": spec.url,
            "model": spec.model,
            "endpoint": spec.endpoint,
            "stream": spec.stream,
            "requests": spec.requests,
            "duration_s": spec.duration_s,
            "prompt_tokens": spec.prompt_tokens,
            "max_tokens": spec.max_tokens,
            "warmup": spec.warmup,
            "timeout_s": spec.timeout_s,
        },
        "results": [result.summary() for result in results],
    }


def _ms(values: Percentiles | None) -> str:
    if values is None:
        return "-"
    return "/".join(_number(1000 * v) for v in (values.p50, values.p95, values.p99))


def _number(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def table(spec: LoadSpec, results: Sequence[LoadResult]) -> Table:
    mode = "streamed" if spec.stream else "not streamed"
    sources = ", ".join(sorted({r.tokens_counted_from for r in results}))
    view = Table(
        title=f"{spec.model} at {spec.endpoint_url} ({mode})",
        caption=f"conc.: requests in flight; rates per second of wall time; tokens from {sources}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    heads = ["conc.", "requests", "errors", "req/s", "out tok/s"]
    if spec.stream:
        heads.append("TTFT ms\np50/p95/p99")
    heads.append("latency ms\np50/p95/p99")
    for head in heads:
        view.add_column(head, justify="right", no_wrap=True)
    for result in results:
        cells = [
            str(result.concurrency),
            str(result.requests),
            str(result.errors),
            _number(result.requests_per_s),
            _number(result.output_tokens_per_s),
        ]
        if spec.stream:
            cells.append(_ms(result.ttft))
        cells.append(_ms(result.latency))
        view.add_row(*cells, style="red" if result.errors else None)
    return view


def show(console: Console, spec: LoadSpec, results: Sequence[LoadResult]) -> None:
    """The table, then the first few error messages of each level that had errors."""
    console.print(table(spec, results))
    for result in results:
        if not result.errors:
            continue
        console.print(
            f"[red]concurrency {result.concurrency}: {result.errors} of {result.requests} "
            "requests failed[/]; the first kinds of error:"
        )
        for message, count in result.error_messages.items():
            console.print(f"  {count} x {message}", markup=False, highlight=False)
