"""Generation throughput (tokens/s) of vLLM through Hearth against `vllm serve` called directly,
on one NVIDIA GPU, in the same run.

Starts `vllm serve MODEL` with the command line Hearth's vLLM launcher builds, then one
`hearth serve` that serves the same model twice: as a local model (`engine: vllm`, Hearth
starting its own `vllm serve`) and as a remote deployment in front of the direct server. Both
vLLM processes share the GPU (each takes --gpu-memory-utilization of it) and only one target is
measured at a time. At each concurrency level, streamed `/v1/completions` requests with one fixed
prompt, `max_tokens` each and `ignore_eos` (so every answer runs the full length) are sent with
`hearth.loadgen.load`; tokens come from the usage chunk. The median of the rounds is reported,
the targets' order rotated each round. It reports, it never asserts; `--write` puts its section
in docs/benchmarks.md. Without an NVIDIA GPU or without vLLM it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    interrupt,
    machine,
    machine_line,
    markers,
    shown,
    write_section,
)
from hearth.config import VLLMSettings
from hearth.engines.gpu import detect_accelerators
from hearth.engines.ports import free_port
from hearth.engines.vllm.launcher import VLLMLauncher
from hearth.errors import HearthError
from hearth.loadgen.load import LoadResult, LoadSpec, run_load

SECTION = "vllm-through-hearth"
DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DIRECT, LOCAL, REMOTE = "vLLM directly", "Hearth, engine: vllm", "Hearth, remote deployment"
TARGETS = (DIRECT, LOCAL, REMOTE)
PROMPT = (
    "Write a detailed travel guide to a small coastal town: its history, the harbour, the food "
    "at the market, walks along the cliffs, where to stay and what to do when it rains."
)
TEMPERATURE = 0.8


def refusal(vllm: str | None) -> str | None:
    """Why this machine cannot run the benchmark, or None."""
    accelerators = detect_accelerators()
    if accelerators.kind != "nvidia":
        return f"it needs an NVIDIA GPU, and this machine has none ({accelerators.describe()})"
    if vllm is None:
        return "it needs vLLM: `pip install vllm` (into .venv, or any environment on PATH)"
    return None


def vllm_version(binary: str) -> str:
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else "unknown"


def compare_engine(log_path: Path, direct: list[str]) -> str:
    """Hearth's own `vllm serve` command line, from the start line its engine log records,
    against the direct one's: they should differ only in the port and the served name."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"Hearth's engine command line could not be read ({exc})."
    started = [line.split(" starting: ", 1)[1] for line in lines if " starting: " in line]
    if not started:
        return f"Hearth's engine command line is not in {log_path}."

    def normal(argv: list[str]) -> list[str]:
        out = list(argv)
        for i, arg in enumerate(argv[:-1]):
            if arg in ("--port", "--served-model-name"):
                out[i + 1] = "<" + arg.lstrip("-") + ">"
        return out

    actual = normal(started[-1].split())
    if actual == normal(direct):
        return "Hearth's engine ran with the direct server's flags (checked in its log)."
    return f"**Hearth's engine ran with other flags:** `{' '.join(actual)}`"


def measure_level(
    target: str, url: str, model: str, concurrency: int, options: argparse.Namespace
) -> LoadResult:
    spec = LoadSpec(
        url=url + "/v1",
        model=model,
        endpoint="completions",
        stream=True,
        concurrency=concurrency,
        requests=max(options.min_requests, options.requests_per_stream * concurrency),
        max_tokens=options.max_tokens,
        timeout_s=options.request_timeout,
        extra_body={"prompt": PROMPT, "temperature": TEMPERATURE, "ignore_eos": True},
    )
    result = run_load(spec)
    if result.errors:
        kinds = "; ".join(f"{n}x {message}" for message, n in result.error_messages.items())
        raise BenchError(f"{target}: {result.errors} of {result.requests} requests failed: {kinds}")
    if result.tokens_counted_from != "usage":
        raise BenchError(f"{target} gave no usage chunk in its streams")
    return result


def benchmark(
    options: argparse.Namespace, binary: str, console: Console, processes: Processes, work: Path
) -> dict[str, Any]:
    settings = VLLMSettings(
        gpu_memory_utilization=options.gpu_memory_utilization,
        max_model_len=options.max_model_len,
    )
    # The direct server runs exactly the command line Hearth's launcher builds for its own.
    port = free_port(HOST)
    command = VLLMLauncher(binary, options.model, "direct", settings).command(HOST, port)
    env = {**os.environ, **command.env}
    direct = Server(DIRECT, command.argv, port, "/health", work / "vllm.log", env)
    processes.start(direct, options.startup_timeout)

    config = work / "hearth.yaml"
    vllm = {
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "max_model_len": options.max_model_len,
    }
    config.write_text(
        yaml.safe_dump(
            {
                "keep_alive": -1,
                "preload": ["local"],
                "upstream_timeout": options.request_timeout,
                "models": {"local": {"model": options.model, "engine": "vllm", "vllm": vllm}},
                "deployments": {"remote": {"url": direct.base_url + "/v1", "model": "direct"}},
            }
        )
    )
    port = free_port(HOST)
    argv = [sys.executable, "-m", "hearth", "serve", "--config", str(config)]
    argv += ["--host", HOST, "--port", str(port), "--data-dir", str(work / "data")]
    # vLLM from .venv/bin when that is where it is installed.
    path = os.pathsep.join([str(Path(binary).parent), os.environ.get("PATH", "")])
    gateway = Server(
        "Hearth", argv, port, "/ready", work / "hearth.log", {**os.environ, "PATH": path}
    )
    processes.start(gateway, options.startup_timeout)
    engine_check = compare_engine(work / "data" / "logs" / "local.log", command.argv)
    console.print(engine_check)
    targets = {
        DIRECT: (direct.base_url, "direct"),
        LOCAL: (gateway.base_url, "local"),
        REMOTE: (gateway.base_url, "remote"),
    }

    for name, (url, model) in targets.items():  # warm up: CUDA graphs, caches, connections
        measure_level(name, url, model, max(options.concurrency), options)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        str(c): {name: [] for name in TARGETS} for c in options.concurrency
    }
    for round_no in range(options.rounds):
        order = TARGETS[round_no % 3 :] + TARGETS[: round_no % 3]
        for concurrency in options.concurrency:
            for name in order:
                url, model = targets[name]
                result = measure_level(name, url, model, concurrency, options)
                results[str(concurrency)][name].append(result.summary())
                console.print(
                    f"round {round_no + 1}, {concurrency} streams, {name}: "
                    f"{result.output_tokens_per_s:.0f} tokens/s"
                )
    accelerators = detect_accelerators()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "gpu": accelerators.describe(),
        "driver": accelerators.gpus[0].driver if accelerators.gpus else None,
        "hearth_version": hearth.__version__,
        "vllm_version": vllm_version(binary),
        "model": options.model,
        "max_tokens": options.max_tokens,
        "rounds": options.rounds,
        "command": shown(["python", "bench/vllm_through_hearth.py", *sys.argv[1:]], {}),
        "vllm_command": shown(command.argv, {binary: "vllm"}),
        "engine_check": engine_check,
        "results": results,
    }


def median_rate(runs: list[dict[str, Any]]) -> float:
    return float(statistics.median(run["output_tokens_per_s"] for run in runs))


def median_ttft(runs: list[dict[str, Any]]) -> float:
    return float(statistics.median(run["ttft_ms"]["p50"] for run in runs if run["ttft_ms"]))


def rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for concurrency, by_target in report["results"].items():
        direct, local, remote = (median_rate(by_target[name]) for name in TARGETS)
        ttft = "/".join(f"{median_ttft(by_target[name]):.0f}" for name in TARGETS)
        out.append(
            [
                concurrency,
                f"{direct:.0f}",
                f"{local:.0f}",
                f"{local / direct:.2f}",
                f"{remote:.0f}",
                f"{remote / direct:.2f}",
                ttft,
            ]
        )
    return out


HEADERS = [
    "streams",
    "vLLM tokens/s",
    "Hearth engine tokens/s",
    "engine / vLLM",
    "Hearth remote tokens/s",
    "remote / vLLM",
    "TTFT p50 ms (vLLM/engine/remote)",
]


def show(console: Console, report: dict[str, Any]) -> None:
    table = Table(title=f"{report['model']}: output tokens/s, median of {report['rounds']} rounds")
    for header in HEADERS:
        table.add_column(header, justify="right")
    for row in rows(report):
        table.add_row(*row)
    console.print(table)


def markdown_section(report: dict[str, Any]) -> str:
    start, end = markers(SECTION)
    return "\n".join(
        [
            start,
            "## vLLM through Hearth",
            "",
            "Written by `bench/vllm_through_hearth.py --write` (`make bench-vllm`). One "
            f"`vllm serve` of {report['model']} called directly, the same model served by "
            "Hearth's vLLM engine (its own `vllm serve`, same flags), and Hearth in front of the "
            "direct server as a remote deployment; streamed `/v1/completions`, one fixed prompt, "
            f"{report['max_tokens']} tokens per answer (`ignore_eos`), tokens from the usage "
            "chunk; median of the rounds, the targets' order rotated each round.",
            "",
            f"- **Date:** {report['date']}; Hearth {report['hearth_version']}, vLLM "
            f"{report['vllm_version']}",
            machine_line(report["machine"]),
            f"- **GPU:** {report['gpu']} (driver {report['driver']})",
            f"- **Command:** `{report['command']}`",
            f"- **vLLM:** `{report['vllm_command']}`; {report['engine_check']}",
            "",
            "| " + " | ".join(HEADERS) + " |",
            "|" + "---:|" * len(HEADERS),
            *("| " + " | ".join(row) + " |" for row in rows(report)),
            end,
            "",
        ]
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub repository id or folder")
    parser.add_argument("--vllm", default=None, help="the vllm command (default: from PATH)")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 8, 32],
        help="streams in flight, comma-separated levels",
    )
    parser.add_argument("--requests-per-stream", type=int, default=4)
    parser.add_argument("--min-requests", type=int, default=16, help="per level and target")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.35,
        help="share of the GPU each of the two vLLM processes takes",
    )
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--startup-timeout", type=float, default=1200.0, help="seconds")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md's section")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    binary = shutil.which(options.vllm or "vllm")
    if (why := refusal(binary)) is not None:
        console.print(f"[yellow]Not run: {why}. Nothing was measured or written.[/]")
        return 2
    assert binary is not None
    work = Path(tempfile.mkdtemp(prefix=f"hearth-bench-{SECTION}-"))
    processes = Processes(console)
    previous = signal.signal(signal.SIGTERM, interrupt)  # stop the servers on SIGTERM too
    ok = False
    try:
        report = benchmark(options, binary, console, processes, work)
        ok = True
    except (BenchError, HearthError) as exc:
        console.print(f"[red]benchmark failed:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    finally:
        console.print("stopping the servers")
        processes.stop_all()
        signal.signal(signal.SIGTERM, previous)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            console.print(f"server logs kept in {work}")
    show(console, report)
    if options.write:
        write_section(options.output, markdown_section(report), SECTION)
        console.print(f"updated the {SECTION} section of {options.output}")
    else:
        console.print("docs/benchmarks.md left as it is (--write updates it)")
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
