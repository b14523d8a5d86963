"""Model load latency through Hearth: cold load, warm first token, model swap and unload.

Starts `hearth serve` with nothing preloaded and a memory budget that fits only one of two
registrations of the bundled Gemma 3 270M model, and times, through streamed
`/v1/chat/completions` requests, how long a first token takes when the model is not loaded, when
it is, and when another model must be evicted first; then starts `llama-server` directly with the
same command line to time its own cold start. Writes the table into its own section of
docs/benchmarks.md (see bench/README.md); it reports, it never asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import ValidationError
from rich.console import Console
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
    wait_ready,
)
from hearth.config import EngineSettings, Settings
from hearth.deployments.build import build_catalogue
from hearth.deployments.deployment import LocalDeployment
from hearth.engines.base import ModelFile
from hearth.engines.llama_cpp.locate import engine_version, locate_llama_server
from hearth.engines.ports import free_port
from hearth.errors import HearthError
from hearth.models.bundled import (
    BUNDLED_MODEL_NAME,
    BUNDLED_TEMPLATE,
    bundled_model_path,
    ensure_bundled_model,
)
from hearth.settings_layers import load_settings

SECTION = "model-load"
MARK_START, MARK_END = markers(SECTION)
HEARTH = "Hearth"
LLAMA_SERVER = "llama-server"
BIG = BUNDLED_MODEL_NAME  # the bundled model with the engine's default settings
SMALL = "gemma-small"  # the same file with a smaller KV cache, so a smaller memory estimate
SMALL_SETTINGS = {"model": BUNDLED_MODEL_NAME, "parallel": 2, "ctx_size": 2048}
MODELS = (BIG, SMALL)
PROMPT = "Name three colours of the rainbow."
DIRECT_POLL_S = 0.02  # how often the direct llama-server's /health is polled

# Measurement kinds, as stored in the raw results.
COLD = "cold"  # Hearth: nothing loaded -> first token
WARM = "warm"  # Hearth: model loaded -> first token
SWAP = "swap"  # Hearth: the other model loaded and idle -> first token of this one
UNLOAD = "unload"  # Hearth: POST /admin/models/{name}/unload answered
DIRECT_HEALTH = "direct_health"  # llama-server: process start -> /health 200
DIRECT_FIRST = "direct_first_token"  # llama-server: process start -> first token


# -- Requests ------------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str
    model: str
    repeat: int
    seconds: float


def first_token(
    client: httpx.Client, base_url: str, model: str, tag: str, payload: dict[str, Any]
) -> float:
    """Send one streamed chat completion; seconds from sending it to the first content chunk.

    `tag` starts the message, so no two requests share a prompt beyond the chat template's first
    tokens and none is answered from the engine's prompt cache. The stream is read to its end.
    """
    body = payload | {
        "model": model,
        "messages": [{"role": "user", "content": f"[{tag}] {PROMPT}"}],
        "stream": True,
    }
    sent = time.perf_counter()
    first: float | None = None
    try:
        with client.stream("POST", base_url + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise BenchError(
                    f"{model} at {base_url} answered HTTP {response.status_code}: "
                    f"{response.text[:500]}"
                )
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    break
                if first is None and _has_content(data):
                    first = time.perf_counter() - sent
    except httpx.HTTPError as exc:
        raise BenchError(f"{model} at {base_url} did not answer: {exc!r}") from None
    if first is None:
        raise BenchError(f"{model} at {base_url} streamed no content")
    return first


def _has_content(data: str) -> bool:
    try:
        choices = json.loads(data).get("choices") or []
    except (ValueError, AttributeError):
        raise BenchError(f"not a JSON chunk: {data[:300]}") from None
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def loaded_models(client: httpx.Client, base_url: str) -> list[str]:
    response = client.get(base_url + "/admin/models/loaded")
    if response.status_code != 200:
        raise BenchError(f"/admin/models/loaded answered HTTP {response.status_code}")
    return sorted(str(m["name"]) for m in response.json()["data"])


def unload(client: httpx.Client, base_url: str, name: str) -> float:
    """POST /admin/models/{name}/unload; seconds until it answered (the engine has stopped)."""
    sent = time.perf_counter()
    response = client.post(f"{base_url}/admin/models/{name}/unload")
    took = time.perf_counter() - sent
    if response.status_code != 200:
        raise BenchError(f"unloading {name} answered HTTP {response.status_code}: {response.text}")
    return took


def expect_loaded(client: httpx.Client, base_url: str, wanted: list[str], after: str) -> None:
    if (found := loaded_models(client, base_url)) != sorted(wanted):
        raise BenchError(f"after {after}, loaded models are {found}, expected {sorted(wanted)}")


# -- The measurements ----------------------------------------------------------------------------


@dataclass
class Setup:
    hearth: Server
    deployments: dict[str, LocalDeployment]
    work: Path
    payload: dict[str, Any]


class Bench:
    def __init__(self, setup: Setup, options: Options, console: Console, processes: Processes):
        self.setup = setup
        self.options = options
        self.console = console
        self.processes = processes
        self.samples: list[Sample] = []
        self.engine_checks: dict[str, str] = {}
        self.requests = 0
        timeout = httpx.Timeout(options.startup_timeout + options.request_timeout, connect=10.0)
        self.client = httpx.Client(timeout=timeout, trust_env=False)

    @property
    def url(self) -> str:
        return self.setup.hearth.base_url

    def tag(self) -> str:
        self.requests += 1
        return f"request {self.requests}"

    def record(self, kind: str, model: str, repeat: int, seconds: float) -> None:
        self.samples.append(Sample(kind, model, repeat, seconds))
        self.console.print(f"repeat {repeat}  {kind:<18} {model:<14} {seconds:7.3f} s")

    def hearth_first_token(self, model: str) -> float:
        return first_token(self.client, self.url, model, self.tag(), self.setup.payload)

    def unload_all(self) -> None:
        for name in loaded_models(self.client, self.url):
            unload(self.client, self.url, name)

    def check_engine(self, model: str) -> None:
        """Once per model: does Hearth's engine run with the command line started directly?"""
        if model in self.engine_checks:
            return
        assert self.setup.hearth.proc is not None
        direct = self.setup.deployments[model].launcher.command(HOST, 0).argv
        pid, check = check_hearth_engine(self.setup.hearth.proc.pid, direct)
        if pid is not None:
            self.processes.watch(pid)
        self.engine_checks[model] = check
        self.console.print(f"{model}: {check}")

    def warm_up(self) -> None:
        """One untimed load of each model, so every timed load finds the file in the page cache."""
        self.unload_all()
        for model in MODELS:
            self.hearth_first_token(model)
            self.check_engine(model)
            unload(self.client, self.url, model)

    def hearth_round(self, repeat: int) -> None:
        """Cold, warm, swap and unload for both models, starting and ending with none loaded."""
        self.unload_all()
        other = {BIG: SMALL, SMALL: BIG}
        for model in MODELS:  # BIG cold, warm; swap to SMALL; then SMALL cold, warm; swap to BIG
            self.record(COLD, model, repeat, self.hearth_first_token(model))
            expect_loaded(self.client, self.url, [model], f"a cold load of {model}")
            self.record(WARM, model, repeat, self.hearth_first_token(model))
            swap_to = other[model]
            self.record(SWAP, swap_to, repeat, self.hearth_first_token(swap_to))
            expect_loaded(self.client, self.url, [swap_to], f"swapping {model} for {swap_to}")
            self.record(UNLOAD, swap_to, repeat, unload(self.client, self.url, swap_to))
            expect_loaded(self.client, self.url, [], f"unloading {swap_to}")

    def direct_round(self, repeat: int) -> None:
        """llama-server started directly with each model's command line: start -> first token."""
        for model in MODELS:
            port = free_port(HOST)
            argv = self.setup.deployments[model].launcher.command(HOST, port).argv
            log = self.setup.work / f"llama-server-{model}.log"
            server = Server(f"{LLAMA_SERVER} ({model})", argv, port, "/health", log)
            started = time.perf_counter()
            self.processes.spawn(server)
            try:
                wait_ready(server, self.options.startup_timeout, interval=DIRECT_POLL_S)
                health = time.perf_counter() - started
                with httpx.Client(timeout=self.client.timeout, trust_env=False) as client:
                    first_token(client, server.base_url, model, self.tag(), self.setup.payload)
                first = time.perf_counter() - started
            finally:
                self.processes.stop(server)
            self.record(DIRECT_HEALTH, model, repeat, health)
            self.record(DIRECT_FIRST, model, repeat, first)

    def run(self) -> list[Sample]:
        with self.client:
            self.console.print("warm-up: one untimed load of each model")
            self.warm_up()
            for repeat in range(1, self.options.repeats + 1):
                self.hearth_round(repeat)
                self.direct_round(repeat)
        return self.samples


# -- Results -------------------------------------------------------------------------------------


@dataclass
class Cell:
    median: float
    low: float
    high: float
    count: int

    def text(self, signed: bool = False) -> str:
        value = f"{self.median:+.2f}" if signed else f"{self.median:.2f}"
        return f"{value} ({self.low:.2f} to {self.high:.2f})"


def cell(values: Sequence[float]) -> Cell | None:
    if not values:
        return None
    return Cell(statistics.median(values), min(values), max(values), len(values))


def by_repeat(samples: Sequence[dict[str, Any]], kind: str, model: str) -> dict[int, float]:
    return {s["repeat"]: s["seconds"] for s in samples if s["kind"] == kind and s["model"] == model}


def difference(samples: Sequence[dict[str, Any]], kind: str, minus: str, model: str) -> Cell | None:
    """`kind` - `minus`, paired by repeat: the median of the differences, and their range."""
    left, right = by_repeat(samples, kind, model), by_repeat(samples, minus, model)
    return cell([left[r] - right[r] for r in sorted(left.keys() & right.keys())])


# (label, kind, minus or None): a row of the table, one column per model.
ROWS: list[tuple[str, str, str | None]] = [
    ("Hearth: cold load -> first token (nothing loaded)", COLD, None),
    ("Hearth: warm first token (model loaded)", WARM, None),
    ("**Load cost** (cold - warm)", COLD, WARM),
    ("Hearth: swap -> first token (other model loaded, idle; evicted first)", SWAP, None),
    ("Swap cost beyond a cold load (swap - cold)", SWAP, COLD),
    ("Hearth: explicit unload (`POST /admin/models/{name}/unload`)", UNLOAD, None),
    ("llama-server direct: process start -> `/health` 200", DIRECT_HEALTH, None),
    ("llama-server direct: process start -> first token", DIRECT_FIRST, None),
    ("**Hearth load overhead** (Hearth cold - direct start -> first token)", COLD, DIRECT_FIRST),
]


def table_rows(samples: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for label, kind, minus in ROWS:
        cells = [label]
        for model in MODELS:
            if minus is None:
                found = cell(list(by_repeat(samples, kind, model).values()))
            else:
                found = difference(samples, kind, minus, model)
            cells.append("n/a" if found is None else found.text(signed=minus is not None))
        out.append(cells)
    return out


def model_header(meta: dict[str, Any], model: str) -> str:
    m = meta["models"][model]
    return (
        f"{model} (parallel {m['parallel']}, ctx {m['ctx_size']}, est. {m['memory_mb']:.0f} MB) s"
    )


def markdown_section(report: dict[str, Any]) -> str:
    meta = report["meta"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    head = ["measurement", *(model_header(meta, model) for model in MODELS)]
    lines = [
        MARK_START,
        "## Model load: cold start, swap and unload",
        "",
        f"Written by `bench/model_load.py` on {meta['date']}; rerun it rather than editing this "
        "section.",
        "",
        machine_line(meta["machine"])[:-1] + f", {meta['load_average_at_end']} at the end)",
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}`",
        f"- **Model:** `{meta['model']}` (the bundled Gemma 3 270M), registered twice: "
        f"`{BIG}` with the engine's default settings and `{SMALL}` with "
        f"`{json.dumps(SMALL_SETTINGS)}`",
        f"- **Hearth's config:** `{meta['config_inline']}` "
        f"(the budget fits either model, not both)",
        "",
        "**Method.** One `hearth serve` with nothing preloaded and `keep_alive` -1, so only the "
        "benchmark loads and unloads models. Every timing is from sending a streamed "
        f"`/v1/chat/completions` request (`max_tokens` {meta['options']['max_tokens']}, "
        "temperature 0, end-of-sequence banned with `logit_bias`, a short prompt whose first "
        "words differ on every request so no prompt cache helps) to its first chunk with "
        "content. After one untimed load of each model (so the file is in the page cache for "
        "every timed load: these are not cold-disk figures), each of the "
        f"{meta['options']['repeats']} repeat(s) does, from no model loaded: `{BIG}` cold, "
        f"`{BIG}` warm, `{SMALL}` (a swap: Hearth evicts the idle `{BIG}`, then loads "
        f"`{SMALL}`), unload `{SMALL}` through the admin endpoint; then the same with the "
        "models' roles exchanged. Then, for each model, "
        "`llama-server` is started directly with exactly the command line Hearth's launcher "
        f"builds, `/health` polled every {DIRECT_POLL_S * 1000:.0f} ms, and the same request "
        "sent once it answers 200 (Hearth polls its engine's `/health` every 50 ms, doubling up "
        "to 500 ms, which is part of its overhead). The loaded models are checked through "
        "`/admin/models/loaded` after every step. Cells: median of the repeats, min to max in "
        "brackets, in seconds; differences are taken within each repeat. On a small machine "
        "shared with other work, llama.cpp's threads stall whenever another process takes a "
        "core, so single samples can be seconds off: read the medians.",
        "",
        "**Command lines.**",
        "",
        f"- Hearth: `{meta['commands'][HEARTH]}`",
        *(f"- llama-server ({model}): `{meta['commands'][model]}`" for model in MODELS),
        *(f"- {model}: {check}" for model, check in meta["engine_checks"].items()),
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "|".join("---:" for _ in MODELS) + "|",
        *("| " + " | ".join(cells) + " |" for cells in table_rows(report["samples"])),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="seconds: median of repeats (min to max)")
    view.add_column("measurement")
    for model in MODELS:
        view.add_column(model, justify="right")
    for cells in table_rows(report["samples"]):
        view.add_row(*(c.replace("**", "").replace("`", "") for c in cells))
    console.print(view)


# -- Command line --------------------------------------------------------------------------------


@dataclass
class Options:
    repeats: int
    max_tokens: int
    llama_server: Path | None
    threads: int | None
    startup_timeout: float
    request_timeout: float
    output: Path
    json: Path | None


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/model_load.py",
        description="Hearth's cold-load, warm first-token, model-swap and unload times.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--repeats", type=int, default=5, help="repeats of every measurement")
    p.add_argument("--max-tokens", type=int, default=8, help="tokens generated per request")
    p.add_argument("--llama-server", type=Path, help="binary (default: the one Hearth finds)")
    p.add_argument("--threads", type=int, help="CPU threads (default: llama-server's choice)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds per start")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    ns = p.parse_args(argv)
    for name in ("repeats", "max_tokens"):
        if getattr(ns, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(**vars(ns))


def engine_overrides(settings: Settings, options: Options) -> dict[str, Any]:
    """The engine settings that differ from the defaults, for Hearth's config file."""
    values = settings.engine.model_dump(mode="json")
    if options.threads is not None:
        values["threads"] = options.threads
    try:
        engine = EngineSettings.model_validate(values).model_dump(mode="json")
    except ValidationError as exc:
        raise BenchError(f"invalid engine settings: {exc}") from None
    defaults = EngineSettings().model_dump(mode="json")
    return {k: v for k, v in engine.items() if v != defaults[k]}


def hearth_config(
    settings: Settings, options: Options, data_dir: Path, binary: Path
) -> tuple[dict[str, Any], dict[str, LocalDeployment]]:
    """Hearth's config, with a budget between the larger model's estimate and both together.

    The estimates come from Hearth's own catalogue code, so they are the ones it will use.
    """
    config: dict[str, Any] = {
        "preload": [],
        "keep_alive": -1,
        "models": {SMALL: dict(SMALL_SETTINGS)},
    }
    if engine := engine_overrides(settings, options):
        config["engine"] = engine
    try:
        probe = Settings.model_validate(config | {"data_dir": data_dir, "llama_server": binary})
    except ValidationError as exc:
        raise BenchError(f"invalid Hearth settings: {exc}") from None
    catalogue = build_catalogue(probe, binary, bundled_model_path(probe.models_dir))
    deployments = {model: catalogue.local(model) for model in MODELS}
    for name, deployment in deployments.items():
        if deployment.launcher.model_file is None:
            raise BenchError(f"{name} is not served by llama-server")
    needs = sorted(d.memory_bytes for d in deployments.values())
    budget_mb = (needs[1] + needs[0] // 2) // 10**6
    if not needs[1] <= budget_mb * 10**6 < needs[0] + needs[1]:
        raise BenchError(f"no budget fits one model but not both (estimates {needs} bytes)")
    config["memory_budget"] = f"{budget_mb}MB"
    return config, deployments


def launcher(deployment: LocalDeployment) -> ModelFile:
    """How llama-server loads the model: its file, settings and chat template."""
    model_file = deployment.launcher.model_file
    assert model_file is not None  # checked in hearth_config
    return model_file


def benchmark(
    options: Options, console: Console, processes: Processes, work: Path, settings: Settings
) -> dict[str, Any]:
    """Start Hearth, measure, and return the raw report."""
    binary = locate_llama_server(options.llama_server or settings.llama_server, settings.tools_dir)
    model = ensure_bundled_model(settings.models_dir)
    versions = {HEARTH: hearth.__version__, LLAMA_SERVER: engine_version(binary.path)}

    data_dir = work / "hearth-data"
    prepare_data_dir(data_dir, model)
    config, deployments = hearth_config(settings, options, data_dir, binary.path)
    config_path = work / "hearth.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    console.print(f"Hearth config: {json.dumps(config)}")

    port = free_port(HOST)
    argv = [sys.executable, *f"-m hearth serve --host {HOST} --port {port}".split()]
    argv += ["--data-dir", str(data_dir), "--config", str(config_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["HEARTH_LLAMA_SERVER"] = str(binary.path)
    hearth_server = Server(HEARTH, argv, port, "/ready", work / "hearth.log", env)
    processes.start(hearth_server, options.startup_timeout)

    payload: dict[str, Any] = {
        "max_tokens": options.max_tokens,
        "temperature": 0.0,
        "logit_bias": {str(token): -100 for token in end_token_ids(model)},
    }
    start_machine = machine()  # its load average is the one at the start
    bench = Bench(Setup(hearth_server, deployments, work, payload), options, console, processes)
    samples = bench.run()

    linked = str(data_dir / "models" / model.name)
    replacements = {
        str(binary.path): "llama-server",
        linked: "<model.gguf>",
        str(data_dir): "<data-dir>",
        str(config_path): "<config.yaml>",
        sys.executable: "python",
        str(launcher(deployments[BIG]).chat_template): f"<hearth>/{BUNDLED_TEMPLATE}.jinja",
    }
    commands = {HEARTH: shown(argv, replacements)}
    for name, deployment in deployments.items():
        commands[name] = shown(deployment.launcher.command(HOST, 0).argv, replacements)
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": start_machine,
            "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "versions": versions,
            "python": platform.python_version(),
            "command": shlex.join(["python", "bench/model_load.py", *sys.argv[1:]]),
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "config": config,
            "config_inline": yaml.safe_dump(
                config, default_flow_style=True, sort_keys=False, width=10**6
            ).strip(),
            "models": {
                name: {
                    "parallel": launcher(d).settings.parallel,
                    "ctx_size": launcher(d).settings.ctx_size,
                    "memory_mb": d.memory_bytes / 10**6,
                }
                for name, d in deployments.items()
            },
            "commands": commands,
            "engine_checks": bench.engine_checks,
            "model": model.name,
            "payload": payload,
        },
        "samples": [asdict(s) for s in samples],
    }


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
