"""Gateway overhead: what Hearth and LiteLLM's proxy add in front of a fixed-response upstream.

nginx answers `POST .../chat/completions` with a static chat completion (under `/json/v1`) or a
static SSE stream (under `/sse/v1`), so the upstream costs next to nothing. The same load, sent
with `hearth.loadgen.load`, goes to nginx directly, through Hearth (a remote deployment) and through
LiteLLM's proxy (its own virtual environment, one worker, no database). Writes the table into its
own section of docs/benchmarks.md (see bench/README.md); it reports, it never asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
from hearth.config import default_cache_dir
from hearth.engines.ports import free_port
from hearth.loadgen.load import LoadResult, LoadSpec, run_load

SECTION = "gateway"
MARK_START, MARK_END = markers(SECTION)
DIRECT, HEARTH, LITELLM = "nginx (direct)", "Hearth", "LiteLLM"
LITELLM_PIN = "litellm[proxy]==1.106.2"
LITELLM_VENV = default_cache_dir() / "bench" / "litellm-venv"
LITELLM_ENV = {
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
}
MODEL, SSE_MODEL = "static", "static-sse"  # the gateways' names for the two nginx locations
MB = 1024 * 1024
BUSY_LOAD_PER_CORE = 0.5  # a load average above this per core is noted in the report
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROMPT_TOKENS = 32
MAX_TOKENS = 16  # the static answers hold 16 tokens whatever is asked

# -- The static upstream -------------------------------------------------------------------------

_ANSWER_WORDS = [f" word{i}" for i in range(MAX_TOKENS)]
_USAGE = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": MAX_TOKENS, "total_tokens": 48}


def static_completion() -> dict[str, Any]:
    return {
        "id": "chatcmpl-static",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(_ANSWER_WORDS)},
                "finish_reason": "stop",
            }
        ],
        "usage": _USAGE,
    }


def static_stream() -> str:
    """A role chunk, one chunk per token, a finish chunk, a usage chunk and `[DONE]`."""

    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-static",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": word}) for word in _ANSWER_WORDS]
    chunks.append(chunk({}, "stop"))
    chunks.append(chunk({}) | {"choices": [], "usage": _USAGE})
    events = "".join(f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks)
    return events + "data: [DONE]\n\n"


def _nginx_string(text: str) -> str:
    # nginx would expand `$name` and unescape backslashes; the static bodies have neither.
    if any(c in text for c in "'\\$"):
        raise BenchError("a static body holds a character nginx would interpret")
    return f"'{text}'"


def nginx_config(root: Path, port: int) -> str:
    """nginx in the foreground, one worker, everything under `root`; no logging per request."""
    models = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}
    locations = []
    for prefix, kind, body in (
        ("json", "application/json", json.dumps(static_completion(), separators=(",", ":"))),
        ("sse", "text/event-stream", static_stream()),
    ):
        locations.append(
            f"    location = /{prefix}/v1/chat/completions "
            f"{{ default_type {kind}; return 200 {_nginx_string(body)}; }}\n"
            f"    location = /{prefix}/v1/models "
            f"{{ default_type application/json; return 200 {_nginx_string(json.dumps(models))}; }}"
        )
    temp = " ".join(
        f"{name}_temp_path {root / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi")
    )
    return "\n".join(
        [
            "daemon off;",
            "master_process on;",
            "worker_processes 1;",
            f"pid {root / 'nginx.pid'};",
            f"error_log {root / 'error.log'} warn;",
            "events { worker_connections 4096; }",
            "http {",
            "  access_log off;",
            "  keepalive_requests 100000000;",
            "  keepalive_timeout 300s;",
            "  client_body_buffer_size 1m;",
            f"  {temp} scgi_temp_path {root / 'scgi'};",
            f"  server {{\n    listen {HOST}:{port};",
            *locations,
            "  }",
            "}",
            "",
        ]
    )


def find_nginx(given: Path | None) -> Path:
    for candidate in (given, shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate is not None and Path(candidate).is_file():
            return Path(candidate)
    raise BenchError(
        "nginx is not installed: `apt-get install -y nginx` (`make bench-gateway` does), "
        "or pass --nginx PATH"
    )


def nginx_version(binary: Path) -> str:
    run = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/(\S+)", run.stderr + run.stdout)
    return match.group(1) if match else "unknown"


# -- The gateways --------------------------------------------------------------------------------


@dataclass
class Target:
    """Where the load goes: base URLs and model names for the JSON and SSE answers."""

    name: str
    json_url: str
    sse_url: str
    json_model: str
    sse_model: str
    api_key: str | None = None
    pid: int | None = None  # the process tree whose CPU time and memory are measured
    unavailable: str | None = None

    def spec(self, stream: bool, **load: Any) -> LoadSpec:
        return LoadSpec(
            url=self.sse_url if stream else self.json_url,
            model=self.sse_model if stream else self.json_model,
            api_key=self.api_key,
            stream=stream,
            prompt_tokens=PROMPT_TOKENS,
            max_tokens=MAX_TOKENS,
            timeout_s=60.0,
            **load,
        )


def hearth_config(nginx_port: int) -> dict[str, Any]:
    upstream = f"http://{HOST}:{nginx_port}"
    return {
        "preload": [],
        "deployments": {
            MODEL: {"url": f"{upstream}/json/v1", "model": MODEL},
            SSE_MODEL: {"url": f"{upstream}/sse/v1", "model": MODEL},
        },
    }


def litellm_config(nginx_port: int) -> dict[str, Any]:
    upstream = f"http://{HOST}:{nginx_port}"
    return {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{upstream}/{prefix}/v1",
                    "api_key": "none",
                },
            }
            for name, prefix in ((MODEL, "json"), (SSE_MODEL, "sse"))
        ],
    }


def ensure_litellm(venv: Path, console: Console) -> Path:
    """LiteLLM's proxy in its own virtual environment (created once, then reused)."""
    binary = venv / "bin" / "litellm"
    if binary.is_file():
        return binary
    console.print(f"installing {LITELLM_PIN} into {venv} (once; later runs reuse it)")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--disable-pip-version-check", LITELLM_PIN], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BenchError(f"could not install {LITELLM_PIN} into {venv}: {exc}") from None
    return binary


def litellm_version(venv: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    run = subprocess.run(
        [venv / "bin" / "python", "-c", code], capture_output=True, text=True, check=False
    )
    return run.stdout.strip() or "unknown"


def probe(target: Target) -> str | None:
    """Why the target cannot answer a non-streamed and a streamed request, or None."""
    for stream in (False, True):
        spec = target.spec(stream)
        body = spec.body()
        try:
            reply = httpx.post(
                spec.endpoint_url,
                json=body,
                headers=spec.request_headers(),
                timeout=30.0,
                trust_env=False,
            )
        except httpx.HTTPError as exc:
            return f"{'streamed' if stream else 'non-streamed'} request failed: {exc!r}"
        if reply.status_code != 200 or "word15" not in reply.text:
            kind = "streamed" if stream else "non-streamed"
            return f"{kind} request answered HTTP {reply.status_code}: {reply.text[:300]}"
    return None


# -- Process figures -----------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    queue += [int(p) for p in (task / "children").read_text().split()]
    return found


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the tree, children it has reaped included."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


def tree_rss_bytes(pid: int) -> int:
    """VmRSS summed over the tree (pages shared between its processes count more than once)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- Measuring -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured load run against one target."""

    target: str
    stream: bool
    concurrency: int
    requests: int
    errors: int
    duration_s: float
    requests_per_s: float
    latency_ms: dict[str, float] | None
    ttft_ms: dict[str, float] | None
    gateway_cpu_ms_per_request: float | None
    generator_cpu_ms_per_request: float | None
    error_messages: dict[str, int] = field(default_factory=dict)
    rounds: list[dict[str, float] | None] | None = None  # per-round latency, when combined


def measured(target: Target, spec: LoadSpec, warmup: int) -> Run:
    """Warm up (own session, not timed), then run `spec`, timing the gateway's CPU around it."""
    if warmup:
        run_load(dataclasses.replace(spec, requests=warmup, duration_s=None))
    cpu_before = None if target.pid is None else tree_cpu_s(target.pid)
    own_before = own_cpu_s()
    result: LoadResult = run_load(spec)
    own = own_cpu_s() - own_before
    gateway = (
        None if target.pid is None or cpu_before is None else tree_cpu_s(target.pid) - cpu_before
    )
    done = max(result.requests, 1)
    summary = result.summary()
    return Run(
        target=target.name,
        stream=spec.stream,
        concurrency=spec.concurrency,
        requests=result.requests,
        errors=result.errors,
        duration_s=result.duration_s,
        requests_per_s=result.requests_per_s,
        latency_ms=summary["latency_ms"],
        ttft_ms=summary["ttft_ms"],
        gateway_cpu_ms_per_request=None if gateway is None else 1000 * gateway / done,
        generator_cpu_ms_per_request=1000 * own / done,
        error_messages=result.error_messages,
    )


def combined(rounds: list[Run]) -> Run:
    """Rounds of one target and mode as one run: percentiles are the median of the rounds'
    (one noisy moment on a shared machine moves one round, not the result), counts and CPU
    time are totals over all of them."""

    def median_of(values: list[dict[str, float] | None]) -> dict[str, float] | None:
        given = [v for v in values if v is not None]
        if not given:
            return None
        return {key: statistics.median(v[key] for v in given) for key in given[0]}

    requests = sum(r.requests for r in rounds)
    duration = sum(r.duration_s for r in rounds)
    messages: Counter[str] = Counter()
    for r in rounds:
        messages.update(r.error_messages)

    def per_request(attribute: str) -> float | None:
        values: list[float | None] = [getattr(r, attribute) for r in rounds]
        if not requests:
            return None
        total = 0.0
        for value, run in zip(values, rounds, strict=True):
            if value is None:
                return None
            total += value * run.requests
        return total / requests

    first = rounds[0]
    return Run(
        target=first.target,
        stream=first.stream,
        concurrency=first.concurrency,
        requests=requests,
        errors=sum(r.errors for r in rounds),
        duration_s=duration,
        requests_per_s=requests / duration if duration else 0.0,
        latency_ms=median_of([r.latency_ms for r in rounds]),
        ttft_ms=median_of([r.ttft_ms for r in rounds]),
        gateway_cpu_ms_per_request=per_request("gateway_cpu_ms_per_request"),
        generator_cpu_ms_per_request=per_request("generator_cpu_ms_per_request"),
        error_messages=dict(messages),
        rounds=[r.latency_ms for r in rounds],
    )


def measure_targets(
    targets: list[Target], options: Options, console: Console
) -> dict[str, dict[str, Any]]:
    """Per mode: latency at concurrency 1 in rounds, the targets' order rotated every round so
    none always runs at the same moment; then each target's throughput run."""
    runs: dict[str, list[Run]] = {t.name: [] for t in targets}
    for stream in (False, True):
        mode = "streamed" if stream else "non-streamed"
        rounds: dict[str, list[Run]] = {t.name: [] for t in targets}
        one_at_a_time = {"concurrency": 1, "requests": options.latency_requests}
        for target in targets:
            with console.status(f"{target.name}: {mode}, warming up"):
                run_load(target.spec(stream, concurrency=1, requests=options.latency_warmup))
        for number in range(options.latency_rounds):
            shift = number % len(targets)
            for target in targets[shift:] + targets[:shift]:
                what = f"{target.name}: {mode}, concurrency 1, round {number + 1}"
                with console.status(f"{what} of {options.latency_rounds}"):
                    rounds[target.name].append(
                        measured(target, target.spec(stream, **one_at_a_time), warmup=0)
                    )
        for target in targets:
            latency = combined(rounds[target.name])
            with console.status(f"{target.name}: {mode}, concurrency {options.concurrency}"):
                throughput = measured(
                    target,
                    target.spec(
                        stream,
                        concurrency=options.concurrency,
                        duration_s=options.throughput_seconds,
                    ),
                    options.throughput_warmup,
                )
            for run in (latency, throughput):
                runs[target.name].append(run)
                show_run(console, run, mode)
    return {
        t.name: {
            "runs": [asdict(r) for r in runs[t.name]],
            "rss_bytes": None if t.pid is None else tree_rss_bytes(t.pid),
        }
        for t in targets
    }


def show_run(console: Console, run: Run, mode: str) -> None:
    p = run.latency_ms or {}
    line = (
        f"{run.target:<15} {mode:<13} c={run.concurrency:<3} {run.requests:6d} requests "
        f"{run.errors:4d} errors {run.requests_per_s:8.1f} req/s  "
        f"p50 {_fmt(p.get('p50'), 2):>7} ms  p99 {_fmt(p.get('p99'), 2):>7} ms"
    )
    if run.gateway_cpu_ms_per_request is not None:
        line += f"  gateway CPU {run.gateway_cpu_ms_per_request:.2f} ms/request"
    console.print(line, highlight=False)
    if run.rounds:
        spread = ", ".join(_fmt(r["p99"], 2) for r in run.rounds if r is not None)
        console.print(f"  p99 of each round: {spread} ms", highlight=False)
    for message, count in list(run.error_messages.items())[:3]:
        console.print(f"  [red]{count} x {message}[/]", highlight=False)


# -- Results -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def run_of(
    report: dict[str, Any], target: str, stream: bool, concurrency: int
) -> dict[str, Any] | None:
    entry = report["targets"].get(target)
    if entry is None or "runs" not in entry:
        return None
    for run in entry["runs"]:
        if run["stream"] == stream and run["concurrency"] == concurrency:
            return dict(run)
    return None


def figures(report: dict[str, Any], target: str, stream: bool) -> dict[str, float | None]:
    """The table's numbers for one target and mode (None where it did not run)."""
    top = report["meta"]["options"]["concurrency"]
    one, many = run_of(report, target, stream, 1), run_of(report, target, stream, top)
    direct = run_of(report, DIRECT, stream, 1)

    def pct(run: dict[str, Any] | None, key: str) -> float | None:
        return None if run is None or run["latency_ms"] is None else float(run["latency_ms"][key])

    def added(key: str) -> float | None:
        mine, base = pct(one, key), pct(direct, key)
        return None if mine is None or base is None or target == DIRECT else mine - base

    rss = report["targets"].get(target, {}).get("rss_bytes")
    return {
        "p50": pct(one, "p50"),
        "p99": pct(one, "p99"),
        "added_p50": added("p50"),
        "added_p99": added("p99"),
        "rps": None if many is None else float(many["requests_per_s"]),
        "cpu_c1": None if one is None else one["gateway_cpu_ms_per_request"],
        "cpu": None if many is None else many["gateway_cpu_ms_per_request"],
        "rss_mb": None if rss is None else rss / MB,
        "errors": None if one is None or many is None else float(one["errors"] + many["errors"]),
    }


TABLE_HEAD = [
    "mode",
    "target",
    "latency p50 / p99 ms (c=1)",
    "added p50 ms",
    "added p99 ms",
    "req/s at c={c}",
    "CPU ms/request (c=1 / c={c})",
    "RSS MB",
    "errors",
]


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for stream in (False, True):
        for target in report["meta"]["targets"]:
            mode = "streamed" if stream else "non-streamed"
            if report["targets"][target].get("unavailable"):
                rows.append([mode, target, "not available (see below)", *["-"] * 6])
                continue
            f = figures(report, target, stream)
            rows.append(
                [
                    mode,
                    target,
                    f"{_fmt(f['p50'], 2)} / {_fmt(f['p99'], 2)}",
                    "-" if target == DIRECT else _fmt(f["added_p50"], 2),
                    "-" if target == DIRECT else _fmt(f["added_p99"], 2),
                    _fmt(f["rps"], 0),
                    f"{_fmt(f['cpu_c1'], 2)} / {_fmt(f['cpu'], 2)}",
                    _fmt(f["rss_mb"], 0),
                    _fmt(f["errors"], 0),
                ]
            )
    return rows


def ratio_rows(report: dict[str, Any]) -> list[list[str]]:
    """Hearth against LiteLLM: how many times less overhead (or more throughput) Hearth has."""
    names = report["meta"]["targets"]
    if HEARTH not in names or LITELLM not in names:
        return []
    if report["targets"][HEARTH].get("unavailable") or report["targets"][LITELLM].get(
        "unavailable"
    ):
        return []
    rows = []
    for stream in (False, True):
        mode = "streamed" if stream else "non-streamed"
        h, lite = figures(report, HEARTH, stream), figures(report, LITELLM, stream)
        for label, key, higher_is_better in (
            ("added latency p50", "added_p50", False),
            ("added latency p99", "added_p99", False),
            ("requests/s at c={c}", "rps", True),
            ("CPU per request at c={c}", "cpu", False),
        ):
            mine, theirs = h[key], lite[key]
            if mine is None or theirs is None or mine <= 0 or theirs <= 0:
                value = "n/a"
            else:
                times = mine / theirs if higher_is_better else theirs / mine
                value = f"{times:.1f}x {'more' if higher_is_better else 'less'}"
            c = report["meta"]["options"]["concurrency"]
            rows.append([mode, label.format(c=c), _fmt(mine, 2), _fmt(theirs, 2), value])
    h_rss, l_rss = (
        figures(report, HEARTH, False)["rss_mb"],
        figures(report, LITELLM, False)["rss_mb"],
    )
    if h_rss and l_rss:
        rows.append(
            [
                "-",
                "resident memory MB",
                f"{h_rss:.0f}",
                f"{l_rss:.0f}",
                f"{l_rss / h_rss:.1f}x less",
            ]
        )
    return rows


def markdown_section(report: dict[str, Any]) -> str:
    meta, options = report["meta"], report["meta"]["options"]
    c = options["concurrency"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    lines = [
        MARK_START,
        "## Gateway overhead: Hearth and LiteLLM in front of a static upstream",
        "",
        f"Written by `bench/gateway_overhead.py` on {meta['date']}; rerun it rather than editing "
        "this section.",
        "",
        machine_line(meta["machine"]),
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}`",
    ]
    if options["quick"]:
        lines.append("- **--quick:** fewer requests and shorter runs; a smoke test, not a result.")
    # At the end the benchmark's own load counts too, so only the start tells of other work.
    busy = float(meta["machine"]["load_average_at_start"].split()[0])
    if busy >= BUSY_LOAD_PER_CORE * int(meta["machine"]["cores"]):
        lines.append(
            f"- **Busy machine:** other work was running (load average {busy:.1f} at the "
            "start); the figures are noisy, and a rerun on a quiet machine is worth more."
        )
    lines += [
        "",
        "**Method.** nginx (one worker) answers `POST /json/v1/chat/completions` with a fixed chat "
        "completion and `POST /sse/v1/chat/completions` with a fixed stream (a role chunk, "
        f"{MAX_TOKENS} content chunks, a finish chunk, a usage chunk, `data: [DONE]`), so the "
        "upstream costs next to nothing. The same load goes to nginx directly, to Hearth (two "
        "remote deployments, one per location) and to LiteLLM's proxy (two `openai/` models, one "
        "worker, no database); neither gateway checks keys. All run at once on this machine, "
        "with the load generator (`hearth.loadgen.load`, aiohttp), and are measured one at a "
        "time. Per mode, latency comes from "
        f"{options['latency_rounds']} rounds of {options['latency_requests']} requests one at a "
        f"time per target (after {options['latency_warmup']} not timed), the targets' order "
        "rotated every round; each percentile shown is the median of the rounds' (a noisy "
        "moment on this shared machine moves one round, not the result), and its difference from "
        "the direct figure is the *added* latency; "
        f"{options['throughput_seconds']:g} s at concurrency {c} (after "
        f"{options['throughput_warmup']} requests not timed) give requests/s. A gateway's CPU "
        "time is utime + stime of its process tree (`/proc/<pid>/stat`) over a run divided by "
        "its requests; its memory is VmRSS summed over the tree after all its runs.",
        "",
        "**Gateways.**",
        "",
        *(f"- {name}: `{command}`" for name, command in meta["commands"].items()),
        "",
        "| " + " | ".join(h.format(c=c) for h in TABLE_HEAD) + " |",
        "|---|---|" + "---:|" * (len(TABLE_HEAD) - 2),
        *("| " + " | ".join(cells) + " |" for cells in table_rows(report)),
    ]
    lines += [
        f"\n{name} was not available: {entry['unavailable']}"
        for name, entry in report["targets"].items()
        if entry.get("unavailable")
    ]
    ratios = ratio_rows(report)
    if ratios:
        lines += [
            "",
            "| mode | figure | Hearth | LiteLLM | Hearth vs LiteLLM |",
            "|---|---|---:|---:|---|",
            *("| " + " | ".join(cells) + " |" for cells in ratios),
        ]
    generator = [
        run["generator_cpu_ms_per_request"] * run["requests_per_s"] / 1000
        for name, entry in report["targets"].items()
        for run in entry.get("runs", [])
        if run["concurrency"] == c and name != DIRECT
    ]
    if generator:
        lines += [
            "",
            f"During the gateways' concurrency-{c} runs the load generator used at most "
            f"{max(generator):.0%} of one core. Against nginx directly it is the generator that "
            "saturates: those requests/s are its ceiling on this machine, not nginx's.",
        ]
    lines.append(MARK_END)
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    c = report["meta"]["options"]["concurrency"]
    view = Table(title="gateway overhead over a static nginx upstream")
    for head in TABLE_HEAD:
        view.add_column(head.format(c=c), justify="left" if head in ("mode", "target") else "right")
    for cells in table_rows(report):
        view.add_row(*cells)
    console.print(view)
    for name, entry in report["targets"].items():
        if entry.get("unavailable"):
            console.print(f"{name} was not available: {entry['unavailable']}", highlight=False)
    ratios = ratio_rows(report)
    if ratios:
        compare = Table(title="Hearth vs LiteLLM")
        for head in ("mode", "figure", "Hearth", "LiteLLM", "Hearth vs LiteLLM"):
            compare.add_column(head)
        for cells in ratios:
            compare.add_row(*cells)
        console.print(compare)


# -- Command line --------------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool
    latency_requests: int
    latency_rounds: int
    latency_warmup: int
    concurrency: int
    throughput_seconds: float
    throughput_warmup: int
    skip_hearth: bool
    skip_litellm: bool
    litellm_venv: Path
    nginx: Path | None
    startup_timeout: float
    output: Path
    json: Path | None


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/gateway_overhead.py",
        description="Latency, throughput, CPU and memory that Hearth and LiteLLM's proxy add "
        "in front of a static nginx upstream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="2 x 100 requests, 3 s runs: a smoke test")
    p.add_argument(
        "--latency-requests", type=int, default=400, help="requests per round at concurrency 1"
    )
    p.add_argument("--latency-rounds", type=int, default=5, help="rounds of them per target")
    p.add_argument("--latency-warmup", type=int, default=50, help="untimed ones before them")
    p.add_argument("--concurrency", type=int, default=64, help="for the throughput runs")
    p.add_argument("--throughput-seconds", type=float, default=10.0, help="length of those runs")
    p.add_argument("--throughput-warmup", type=int, default=128, help="untimed requests first")
    p.add_argument("--skip-hearth", action="store_true", help="leave Hearth out")
    p.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    p.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV, help="created if missing")
    p.add_argument("--nginx", type=Path, help="nginx binary (default: PATH, then /usr/sbin)")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds per server")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    ns = p.parse_args(argv)
    if ns.quick:
        ns.latency_requests, ns.latency_warmup = min(ns.latency_requests, 100), 20
        ns.latency_rounds = min(ns.latency_rounds, 2)
        ns.throughput_seconds, ns.throughput_warmup = min(ns.throughput_seconds, 3.0), 64
    for name in ("latency_requests", "latency_rounds", "concurrency", "throughput_seconds"):
        if getattr(ns, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return Options(**vars(ns))


def start_failure(message: str) -> str:
    """One line for the report from a failed start: the log's error line, else its last one."""
    head, *log = message.splitlines()
    lines = [line.strip() for line in log if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    cause = errors[0] if errors else lines[-1] if lines else ""
    return f"{head.split(';')[0]}: {cause}" if cause else head


def start_gateway(
    processes: Processes, server: Server, target: Target, timeout: float, console: Console
) -> None:
    """Start a gateway and check it answers; a failure makes the target unavailable, not fatal."""
    try:
        processes.start(server, timeout)
    except BenchError as exc:
        target.unavailable = start_failure(str(exc))
        console.print(f"[yellow]{target.name} is not available: {exc}[/]", highlight=False)
        processes.stop(server)
        return
    assert server.proc is not None
    target.pid = server.proc.pid
    for pid in process_tree(server.proc.pid)[1:]:
        processes.watch(pid)
    if (why := probe(target)) is not None:
        target.unavailable = why
        console.print(f"[yellow]{target.name} is not available: {why}[/]")


def benchmark(
    options: Options, console: Console, processes: Processes, work: Path
) -> dict[str, Any]:
    host = machine()  # the load average before anything starts
    nginx = find_nginx(options.nginx)
    root = work / "nginx"
    root.mkdir(parents=True)
    port = free_port(HOST)
    conf = root / "nginx.conf"
    conf.write_text(nginx_config(root, port), encoding="utf-8")
    argv = [str(nginx), "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
    upstream = Server(DIRECT, argv, port, "/json/v1/models", work / "nginx.log")
    processes.start(upstream, options.startup_timeout)
    assert upstream.proc is not None
    direct = Target(
        DIRECT, f"{upstream.base_url}/json/v1", f"{upstream.base_url}/sse/v1", MODEL, MODEL,
        pid=upstream.proc.pid,
    )  # fmt: skip
    if (why := probe(direct)) is not None:
        raise BenchError(f"nginx does not answer as configured: {why}")
    targets = [direct]
    versions = {"Hearth": hearth.__version__, "nginx": nginx_version(nginx)}
    commands = {
        DIRECT: shown(
            argv,
            {
                str(nginx): "nginx",
                str(root): "<dir>",
                str(conf): "<dir>/nginx.conf",
                str(root / "error.log"): "<dir>/error.log",
            },
        )
    }

    if not options.skip_hearth:
        config = work / "hearth.yaml"
        config.write_text(yaml.safe_dump(hearth_config(port), sort_keys=False), encoding="utf-8")
        hport = free_port(HOST)
        argv = [sys.executable, "-m", "hearth", "serve", "--config", str(config)]
        argv += ["--host", HOST, "--port", str(hport), "--data-dir", str(work / "hearth-data")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        server = Server(HEARTH, argv, hport, "/ready", work / "hearth.log", env)
        target = Target(HEARTH, f"{server.base_url}/v1", f"{server.base_url}/v1", MODEL, SSE_MODEL)
        start_gateway(processes, server, target, options.startup_timeout, console)
        targets.append(target)
        commands[HEARTH] = shown(
            argv,
            {
                sys.executable: "python",
                str(config): "<hearth.yaml>",
                str(work / "hearth-data"): "<data-dir>",
            },
        )

    if not options.skip_litellm:
        binary = ensure_litellm(options.litellm_venv, console)
        versions["LiteLLM"] = litellm_version(options.litellm_venv)
        config = work / "litellm.yaml"
        config.write_text(yaml.safe_dump(litellm_config(port), sort_keys=False), encoding="utf-8")
        lport = free_port(HOST)
        argv = [str(binary), "--config", str(config), "--host", HOST, "--port", str(lport)]
        argv += ["--num_workers", "1"]
        # No key on either gateway (Hearth has none configured): LiteLLM refuses to start
        # without a master key unless told. No network: its bundled model cost map.
        env = dict(os.environ, **LITELLM_ENV)
        server = Server(LITELLM, argv, lport, "/health/liveliness", work / "litellm.log", env)
        target = Target(LITELLM, f"{server.base_url}/v1", f"{server.base_url}/v1", MODEL, SSE_MODEL)
        start_gateway(processes, server, target, options.startup_timeout, console)
        targets.append(target)
        settings = " ".join(f"{k}={v}" for k, v in LITELLM_ENV.items())
        commands[LITELLM] = f"{settings} " + shown(
            argv, {str(binary): "litellm", str(config): "<litellm.yaml>"}
        )

    versions["aiohttp (load)"] = importlib.metadata.version("aiohttp")
    results: dict[str, Any] = {
        t.name: {"unavailable": t.unavailable} for t in targets if t.unavailable
    }
    results |= measure_targets([t for t in targets if not t.unavailable], options, console)
    results = {t.name: results[t.name] for t in targets}  # in the table's order
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": host,
            "versions": versions,
            "python": platform.python_version(),
            "command": shlex.join(["python", "bench/gateway_overhead.py", *sys.argv[1:]]),
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "targets": [t.name for t in targets],
            "commands": commands,
            "configs": {"Hearth": hearth_config(port), "LiteLLM": litellm_config(port)},
        },
        "targets": results,
    }


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
