"""Tokens/s of the bundled model split over an RPC worker, against the same model on one host.

Starts two `hearth rpc-worker`s (llama.cpp's rpc-server) and three llama-servers on the bundled
Gemma 3 270M GGUF, each with the command line Hearth's launcher builds for a model entry: on this
host alone; split (`gpu_layers: 9`, the last 9 of its 18 layers on a worker); and every layer on
a worker (`rpc` alone). Rounds of identical `/completion` requests go to each in turn and the
engine's own timings give prompt and generation tokens/s. Writes its own section of
docs/benchmarks.md (see bench/README.md); it reports, it never asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
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
from hearth.config import BUNDLED_MODEL_NAME, Settings
from hearth.deployments.build import build_catalogue
from hearth.engines.llama_cpp.locate import engine_version, locate_llama_server, locate_rpc_server
from hearth.engines.ports import free_port
from hearth.errors import HearthError
from hearth.models.bundled import ensure_bundled_model
from hearth.settings_layers import load_settings

SECTION = "rpc-split"
MARK_START, MARK_END = markers(SECTION)
ONE_HOST = "one-host"  # the model entries, and the engines' aliases
HALF = "split-9"
ALL = "split-all"
CONFIGS = (ONE_HOST, HALF, ALL)
LABELS = {
    ONE_HOST: "one host",
    HALF: "split, `gpu_layers: 9`: output layer + 8 of 18 layers on the worker",
    ALL: "split, every layer on the worker",
}
WORKER_LAYERS = 9
# About 250 tokens of prompt, the same every time (the prompt cache is off per request).
PROMPT = " ".join(
    f"Line {i}: the lighthouse keeper counted the ships that passed the rocks at night."
    for i in range(1, 17)
)


@dataclass
class Options:
    rounds: int
    tokens: int
    threads: int
    startup_timeout: float
    output: Path
    json: Path | None


@dataclass
class Sample:
    config: str
    round: int
    prompt_tokens: int
    prompt_per_second: float
    generated_tokens: int
    generation_per_second: float
    text: str


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (read from /proc: connecting would open
    a session with rpc-server, which serves one client at a time)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":
            return True
    return False


def start_worker(processes: Processes, work: Path, rpc_server: Path, threads: int) -> int:
    port = free_port(HOST)
    argv = [sys.executable, "-m", "hearth", "rpc-worker", "--port", str(port)]
    argv += ["--threads", str(threads), "--data-dir", str(work / f"worker-{port}")]
    env = {**os.environ, "HEARTH_RPC_SERVER": str(rpc_server)}
    server = Server(f"rpc-worker :{port}", argv, port, "", work / f"worker-{port}.log", env)
    processes.spawn(server)
    deadline = time.monotonic() + 30
    while not listening(port):
        assert server.proc is not None
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"the RPC worker did not start; see {server.log_path}")
        time.sleep(0.1)
    return port


def engine_config(workers: dict[str, int], threads: int) -> dict[str, Any]:
    """Hearth's settings for the three model entries (what a user would write)."""
    return {
        # Verbosity 4: llama.cpp then logs the device of every buffer (see `buffers`).
        "engine": {
            "parallel": 1,
            "ctx_size": 2048,
            "threads": threads,
            "extra_args": ["--verbosity", "4"],
        },
        "models": {
            ONE_HOST: {"model": BUNDLED_MODEL_NAME},
            HALF: {
                "model": BUNDLED_MODEL_NAME,
                "rpc": [f"{HOST}:{workers[HALF]}"],
                "gpu_layers": WORKER_LAYERS,
            },
            ALL: {"model": BUNDLED_MODEL_NAME, "rpc": [f"{HOST}:{workers[ALL]}"]},
        },
    }


def complete(client: httpx.Client, base_url: str, tokens: int) -> dict[str, Any]:
    body = {
        "prompt": PROMPT,
        "n_predict": tokens,
        "temperature": 0,
        "seed": 1,
        "ignore_eos": True,  # every answer runs the full length
        "cache_prompt": False,  # every request evaluates the whole prompt
    }
    response = client.post(base_url + "/completion", json=body)
    if response.status_code != 200:
        raise BenchError(f"{base_url} answered HTTP {response.status_code}: {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


def buffers(log: str) -> dict[str, float]:
    """Model buffer sizes by device from llama-server's log, in MiB."""
    found = re.findall(r"load_tensors:\s+(\S+) model buffer size\s*=\s*([\d.]+) MiB", log)
    return {device: float(size) for device, size in found}


def benchmark(
    options: Options, console: Console, processes: Processes, work: Path, settings: Settings
) -> dict[str, Any]:
    binary = locate_llama_server(settings.llama_server, settings.tools_dir).path
    rpc_server = locate_rpc_server(settings.rpc_server, settings.tools_dir).path
    model = ensure_bundled_model(settings.models_dir)
    start_machine = machine()  # its load average is the one at the start
    workers = {
        config: start_worker(processes, work, rpc_server, options.threads) for config in (HALF, ALL)
    }
    config = engine_config(workers, options.threads)
    probe = Settings.model_validate(config | {"data_dir": settings.data_dir})
    catalogue = build_catalogue(probe, binary, model)
    servers: dict[str, Server] = {}
    loads: dict[str, float] = {}
    for name in CONFIGS:
        port = free_port(HOST)
        argv = catalogue.local(name).launcher.command(HOST, port).argv
        server = Server(name, argv, port, "/health", work / f"engine-{port}.log")
        started = time.perf_counter()
        processes.start(server, options.startup_timeout)
        loads[name] = time.perf_counter() - started
        servers[name] = server

    samples: list[Sample] = []
    with httpx.Client(timeout=600, trust_env=False) as client:
        for name in CONFIGS:  # untimed: the first request of each warms its buffers
            complete(client, servers[name].base_url, 8)
        for round_ in range(1, options.rounds + 1):
            order = CONFIGS[round_ % 3 :] + CONFIGS[: round_ % 3]  # rotated each round
            for name in order:
                answer = complete(client, servers[name].base_url, options.tokens)
                t = answer["timings"]
                sample = Sample(
                    name, round_, t["prompt_n"], t["prompt_per_second"],
                    t["predicted_n"], t["predicted_per_second"], answer["content"],
                )  # fmt: skip
                samples.append(sample)
                console.print(
                    f"round {round_}  {name:<10} prompt {sample.prompt_per_second:7.1f} tok/s  "
                    f"generation {sample.generation_per_second:6.1f} tok/s"
                )

    replacements = {str(binary): "llama-server", str(model): "<gemma-3-270m.gguf>"}
    for arg in servers[ONE_HOST].argv:
        if arg.endswith(".jinja"):
            replacements[arg] = "<hearth>/gemma3.jinja"
    worker_address = re.compile(rf"{re.escape(HOST)}:\d+")

    def command(name: str) -> str:
        argv = [worker_address.sub("127.0.0.1:<worker port>", a) for a in servers[name].argv]
        return shown(argv, replacements)

    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": start_machine,
            "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "versions": {"Hearth": hearth.__version__, "llama.cpp": engine_version(binary)},
            "python": platform.python_version(),
            "command": shlex.join(["python", "bench/rpc_split.py", *sys.argv[1:]]),
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "commands": {name: command(name) for name in CONFIGS},
            "worker_command": "python -m hearth rpc-worker --port <worker port> "
            f"--threads {options.threads}",
            "loads": loads,
            "buffers": {name: buffers(servers[name].log_path.read_text()) for name in CONFIGS},
            "same_text": len({s.text for s in samples}) == 1,
        },
        "samples": [asdict(s) for s in samples],
    }


# -- Results -------------------------------------------------------------------------------------


def median(samples: Sequence[dict[str, Any]], config: str, field: str) -> float:
    return float(statistics.median(s[field] for s in samples if s["config"] == config))


def spread(samples: Sequence[dict[str, Any]], config: str, field: str, digits: int) -> str:
    """The median, and the range over the rounds in brackets."""
    values = [s[field] for s in samples if s["config"] == config]
    low, high = min(values), max(values)
    return f"{statistics.median(values):.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    samples, meta = report["samples"], report["meta"]
    rows = []
    for name in CONFIGS:
        prompt = median(samples, name, "prompt_per_second")
        generation = median(samples, name, "generation_per_second")
        on_host = median(samples, ONE_HOST, "generation_per_second")
        prompt_on_host = median(samples, ONE_HOST, "prompt_per_second")
        sizes = meta["buffers"][name]
        worker = sum(v for k, v in sizes.items() if k.startswith("RPC"))
        here = sum(v for k, v in sizes.items() if not k.startswith("RPC"))
        rows.append(
            [
                LABELS[name],
                f"{here:.0f} / {worker:.0f}",
                spread(samples, name, "prompt_per_second", 0),
                f"{prompt / prompt_on_host:.2f}x",
                spread(samples, name, "generation_per_second", 1),
                f"{generation / on_host:.2f}x",
                f"{meta['loads'][name]:.1f}",
            ]
        )
    return rows


HEAD = [
    "engine",
    "model buffers here / on the worker (MiB)",
    "prompt tok/s (range)",
    "prompt vs one host",
    "generation tok/s (range)",
    "generation vs one host",
    "start to /health (s)",
]


def markdown_section(report: dict[str, Any]) -> str:
    meta = report["meta"]
    options = meta["options"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    same = "identical" if meta["same_text"] else "**not identical**"
    cores = int(meta["machine"]["cores"])
    busy = float(meta["machine"]["load_average_at_start"].split()[0]) > cores / 2
    lines = [
        MARK_START,
        "## A model split over an RPC worker",
        "",
        f"Written by `bench/rpc_split.py` on {meta['date']}; rerun it rather than editing this "
        "section.",
        "",
        machine_line(meta["machine"])[:-1] + f", {meta['load_average_at_end']} at the end)",
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}`",
        f"- **Workers:** `{meta['worker_command']}`, on 127.0.0.1",
        *(f"- **{LABELS[name]}:** `{meta['commands'][name]}`" for name in CONFIGS),
        "",
        "**Method.** Two `hearth rpc-worker`s and three llama-servers on the bundled Gemma 3 "
        "270M, each started with the command line Hearth builds for its model entry (no "
        "`rpc`; `rpc` with `gpu_layers: 9`; `rpc` alone), all with `--verbosity 4` "
        "(`engine.extra_args`) so that llama.cpp logs the device of every buffer. After one "
        "untimed request each, "
        f"{options['rounds']} rounds send each engine, in an order rotated every round, the "
        f"same `/completion` request: a {report['samples'][0]['prompt_tokens']}-token prompt "
        f"(prompt cache off), {options['tokens']} tokens generated at temperature 0 with the "
        "end of sequence ignored. Tokens/s are llama-server's own `timings` (prompt and "
        "generation), the median of the rounds; ratios are to the one-host engine in the same "
        f"run. Greedy answers of all three engines in every round: {same}. Buffer sizes are "
        f"the model buffers llama-server logged per device. Every engine and worker computes "
        f"with {options['threads']} CPU thread(s) (`--threads`). Gemma's output layer is its token "
        "embeddings (tied), so offloading it puts a second copy of them, most of the model's "
        "size, on the worker.",
        "",
        "| " + " | ".join(HEAD) + " |",
        "|---|" + "|".join("---:" for _ in HEAD[1:]) + "|",
        *("| " + " | ".join(cells) + " |" for cells in table_rows(report)),
        "",
        '**What this does and does not say.** Both "hosts" are processes on the same 2-core '
        "machine and the worker is reached over loopback, so this measures the cost of the RPC "
        "protocol itself (every graph split sends activations to the worker and waits for the "
        "answer, per token), not a network: a real LAN adds its round-trip time once or more "
        "per generated token, and a worker with a GPU or free memory is the reason to split at "
        "all. Here the worker brings no extra compute (it shares the CPU, and the host's "
        "threads wait while it computes), so a ratio below 1 is the price of the split; the "
        "point of RPC is to serve a model that does not fit one machine. The tests run the same "
        "split across two network namespaces joined by a veth pair (tests/scale/test_rpc.py), "
        "which is an in-kernel link as well."
        + (
            " This run shared the machine with other work (see the load average): single rounds "
            "vary widely (the ranges in brackets), so read the ratios as rough, and rerun it on "
            "a quiet machine for firmer figures."
            if busy
            else ""
        ),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="median of rounds")
    for i, head in enumerate(HEAD):
        view.add_column(head, justify="left" if i == 0 else "right")
    for cells in table_rows(report):
        view.add_row(*(c.replace("`", "") for c in cells))
    console.print(view)
    if not report["meta"]["same_text"]:
        console.print("[yellow]the engines' greedy answers differ[/]")


# -- Command line --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/rpc_split.py",
        description="Tokens/s of the bundled model split over an RPC worker vs on one host.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rounds", type=int, default=5, help="requests to each engine")
    p.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    # One each: the split engine and its worker then never take each other's core on 2 cores.
    p.add_argument("--threads", type=int, default=1, help="CPU threads of engines and workers")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds per start")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    ns = p.parse_args(argv)
    for name in ("rounds", "tokens", "threads"):
        if getattr(ns, name) < 1:
            p.error(f"--{name} must be at least 1")
    return Options(**vars(ns))


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    try:
        settings = load_settings()
    except HearthError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    return run_and_report(
        console,
        section=SECTION,
        output=options.output,
        json_path=options.json,
        measure=lambda processes, work: benchmark(options, console, processes, work, settings),
        show=show,
        markdown=markdown_section,
    )


if __name__ == "__main__":
    sys.exit(main())
