"""Multi-turn chat over two engine replicas: prefix affinity vs round robin (issue 15, benchmark
(a)).

Starts a fresh `hearth serve` for each run with the bundled Gemma 3 270M model as one model
entry with `replicas: 2` (two llama-server processes, each pinned to its own half of the cores)
and `replica_routing` set to `affinity` or `round_robin`, the only difference between the runs.
Eight conversations run at once, six turns each; every turn's prompt is a ~1,500-token document,
the conversation so far and a new question, and its answer is 16 tokens. Reported for the
follow-up turns (2..6): time to first token (median, p90) and the engine's `cached_tokens`.
Two workloads: all conversations share one document, or each has its own. `--setup` adds engine
settings to compare in the same run (llama-server's RAM prompt cache off, fewer slots). Writes its
own section of docs/benchmarks.md (see bench/README.md); it reports, it never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
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
    end_token_ids,
    machine,
    machine_line,
    markers,
    prepare_data_dir,
    run_and_report,
)
from hearth.engines.llama_cpp.locate import engine_version, locate_llama_server
from hearth.engines.ports import free_port
from hearth.errors import HearthError
from hearth.models.bundled import BUNDLED_MODEL_NAME, ensure_bundled_model
from hearth.settings_layers import load_settings

SECTION = "prefix-affinity"
MARK_START, MARK_END = markers(SECTION)
MODEL = "chat"
AFFINITY, ROUND_ROBIN = "affinity", "round_robin"
SHARED, OWN = "shared", "own"  # one document for every conversation, or one each
DEFAULT_SETUP = "defaults"
QUEUE_TIMEOUT_S = 3600
WORDS = (
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "iris",
    "juniper", "kelp", "lantern", "meadow", "nickel", "orchid", "pewter", "quartz", "raven",
    "saffron", "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zinc",
)  # fmt: skip


# -- The workload --------------------------------------------------------------------------------


def document(seed: int, sentences: int) -> str:
    """Numbered sentences, different for every seed from its first words on."""
    rng = random.Random(seed)
    lines = [f"Field log {seed}."]
    for i in range(1, sentences + 1):
        a, b = rng.sample(WORDS, 2)
        lines.append(f"Note {i}: the {a} station reported {rng.randint(2, 999)} {b} samples.")
    return " ".join(lines)


def question(turn: int, conversation: int) -> str:
    word = WORDS[(turn * 7 + conversation * 3) % len(WORDS)]
    return f"Question {turn}: which notes mention {word}? Answer in one short sentence."


@dataclass(frozen=True)
class Case:
    """One run: engine setup, workload, routing, round."""

    setup: str
    variant: str
    strategy: str
    round: int


@dataclass
class Sample:
    setup: str
    variant: str
    strategy: str
    round: int
    conversation: int
    turn: int
    ttft: float
    prompt_tokens: int
    cached_tokens: int | None


async def ask(
    client: httpx.AsyncClient, url: str, messages: list[dict[str, str]], payload: dict[str, Any]
) -> tuple[float, str, dict[str, Any]]:
    """One streamed chat turn: seconds to the first content chunk, the answer, the usage."""
    body = payload | {
        "model": MODEL,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    usage: dict[str, Any] = {}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise BenchError(f"HTTP {response.status_code}: {response.text[:500]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    first = first if first is not None else time.perf_counter() - sent
                    text.append(content)
    if first is None or not usage:
        raise BenchError(f"a turn streamed no content or no usage (usage: {usage})")
    return first, "".join(text), usage


async def workload(url: str, case: Case, options: Options, payload: dict[str, Any]) -> list[Sample]:
    """`conversations` conversations at once, each turn after the previous one's answer."""
    samples: list[Sample] = []
    timeout = httpx.Timeout(options.request_timeout, connect=10.0)

    async def conversation(c: int, client: httpx.AsyncClient) -> None:
        seed = 0 if case.variant == SHARED else c + 1
        messages = [{"role": "system", "content": document(seed, options.sentences)}]
        for turn in range(1, options.turns + 1):
            messages.append({"role": "user", "content": question(turn, c)})
            ttft, answer, usage = await ask(client, url, messages, payload)
            messages.append({"role": "assistant", "content": answer})
            details = usage.get("prompt_tokens_details") or {}
            cached = details.get("cached_tokens")
            prompt = int(usage["prompt_tokens"])
            samples.append(
                Sample(
                    case.setup,
                    case.variant,
                    case.strategy,
                    case.round,
                    c,
                    turn,
                    ttft,
                    prompt,
                    cached,
                )
            )

    limits = httpx.Limits(max_connections=options.conversations * 2)
    async with httpx.AsyncClient(timeout=timeout, trust_env=False, limits=limits) as client:
        await asyncio.gather(*(conversation(c, client) for c in range(options.conversations)))
    return samples


# -- One run: a fresh Hearth ---------------------------------------------------------------------


def hearth_config(strategy: str, setup: dict[str, Any], options: Options) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": BUNDLED_MODEL_NAME,
        "replicas": 2,
        "replica_routing": strategy,
    }
    if options.parallel is not None:
        entry["parallel"] = options.parallel
    if options.ctx_size is not None:
        entry["ctx_size"] = options.ctx_size
    if options.engine_args:
        entry["extra_args"] = shlex.split(options.engine_args)
    entry.update(setup)
    return {
        "preload": [MODEL],
        "keep_alive": -1,
        # A request may wait for a slot as long as it takes: the wait is part of what is measured
        # (the default, 120 s, turns round robin's longest waits into 503s on this machine).
        "request_queue_timeout": QUEUE_TIMEOUT_S,
        "models": {MODEL: entry},
    }


def wait_for_replicas(url: str, timeout: float) -> list[dict[str, Any]]:
    """Both replicas ready (/ready only waits for the first)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            loaded = client.get(url + "/admin/models/loaded").json()["data"]
            replicas = [r for m in loaded if m["name"] == MODEL for r in m["replicas"]]
            if len(replicas) == 2 and all(r["state"] == "ready" for r in replicas):
                return replicas
            time.sleep(0.2)
    raise BenchError(f"the two replicas of {MODEL} were not ready within {timeout:.0f} s")


def replica_choices(url: str) -> dict[str, int]:
    text = httpx.get(url + "/metrics", timeout=10.0, trust_env=False).text
    pattern = re.compile(
        rf'^hearth_replica_choices_total{{model="{MODEL}",reason="(\w+)"}} ([0-9.e+]+)$', re.M
    )
    return {reason: int(float(count)) for reason, count in pattern.findall(text)}


@dataclass
class Run:
    setup: str
    variant: str
    strategy: str
    round: int
    replicas: list[dict[str, Any]]
    choices: dict[str, int]
    seconds: float
    load_average: float  # the machine's 1-minute load average as the run started


def one_run(
    case: Case,
    options: Options,
    processes: Processes,
    work: Path,
    model: Path,
    binary: Path,
    payload: dict[str, Any],
    console: Console,
) -> tuple[Run, list[Sample]]:
    setup = re.sub(r"[^A-Za-z0-9]+", "-", case.setup)
    folder = work / f"{setup}-{case.variant}-{case.strategy}-{case.round}"
    data_dir = folder / "hearth-data"
    prepare_data_dir(data_dir, model)
    config_path = folder / "hearth.yaml"
    config = hearth_config(case.strategy, options.setups[case.setup], options)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port(HOST)
    argv = [sys.executable, *f"-m hearth serve --host {HOST} --port {port}".split()]
    argv += ["--data-dir", str(data_dir), "--config", str(config_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["HEARTH_LLAMA_SERVER"] = str(binary)
    name = f"Hearth ({case.setup}, {case.variant}, {case.strategy})"
    server = Server(name, argv, port, "/ready", folder / "log", env)
    processes.start(server, options.startup_timeout)
    try:
        replicas = wait_for_replicas(server.base_url, options.startup_timeout)
        load_average = os.getloadavg()[0]
        started = time.perf_counter()
        samples = asyncio.run(workload(server.base_url, case, options, payload))
        seconds = time.perf_counter() - started
        choices = replica_choices(server.base_url)
    finally:
        processes.stop(server)
    follow = [s for s in samples if s.turn > 1]
    console.print(
        f"{case.setup}: {case.variant:>6} {case.strategy:<11} {seconds:6.1f} s  follow-up "
        f"TTFT median {statistics.median(s.ttft for s in follow):.3f} s  mean cached "
        f"{_mean([s.cached_tokens for s in follow]):.0f}  choices {choices}"
    )
    run = Run(
        case.setup,
        case.variant,
        case.strategy,
        case.round,
        replicas,
        choices,
        seconds,
        load_average,
    )
    return run, samples


# -- Results -------------------------------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else float("nan")


def p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def mine(items: Sequence[dict[str, Any]], setup: str, variant: str, strategy: str) -> list[Any]:
    return [
        i
        for i in items
        if i["setup"] == setup and i["variant"] == variant and i["strategy"] == strategy
    ]


def summary(
    samples: Sequence[dict[str, Any]], setup: str, variant: str, strategy: str
) -> dict[str, float]:
    mine_ = mine(samples, setup, variant, strategy)
    follow = [s for s in mine_ if s["turn"] > 1]
    first = [s for s in mine_ if s["turn"] == 1]
    ttfts = [s["ttft"] for s in follow]
    return {
        "median": statistics.median(ttfts),
        "mean": _mean(ttfts),  # the whole wait, tails included: what a user waits on average
        "p90": p90(ttfts),
        "cached": _mean([s["cached_tokens"] for s in follow]),
        "prompt": _mean([s["prompt_tokens"] for s in follow]),
        "first_median": statistics.median(s["ttft"] for s in first),
        "first_prompt": _mean([s["prompt_tokens"] for s in first]),
        "count": len(follow),
        "reread": sum(1 for s in follow if _reread(s)),
    }


def _reread(sample: dict[str, Any]) -> bool:
    """A follow-up whose replica held less than half its prompt: it evaluated the document
    again (a turn that finds its conversation holds all but the last question and answer)."""
    return bool((sample["cached_tokens"] or 0) < sample["prompt_tokens"] / 2)


def cases(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(setup, workload) pairs, in the order they were given."""
    return [(setup, v) for setup in report["meta"]["setups"] for v in report["meta"]["variants"]]


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for setup, variant in cases(report):
        for strategy in (AFFINITY, ROUND_ROBIN):
            s = summary(report["samples"], setup, variant, strategy)
            runs = mine(report["runs"], setup, variant, strategy)
            choices: dict[str, int] = {}
            for run in runs:
                for reason, count in run["choices"].items():
                    choices[reason] = choices.get(reason, 0) + count
            rows.append(
                [
                    setup,
                    VARIANT_LABEL[variant],
                    f"`{strategy}`",
                    f"{s['median']:.2f}",
                    f"{s['mean']:.2f}",
                    f"{s['p90']:.2f}",
                    f"{s['cached']:.0f} / {s['prompt']:.0f}",
                    f"{s['reread']} of {s['count']}",
                    f"{s['first_median']:.2f}",
                    ", ".join(f"{r['seconds']:.0f}" for r in runs),
                    ", ".join(f"{k} {v}" for k, v in sorted(choices.items())),
                ]
            )
    return rows


def ratios(report: dict[str, Any]) -> list[str]:
    lines = []
    for setup, variant in cases(report):
        a = summary(report["samples"], setup, variant, AFFINITY)
        r = summary(report["samples"], setup, variant, ROUND_ROBIN)
        lines.append(
            f"- **{setup}, {VARIANT_LABEL[variant]}:** round robin / affinity, follow-up time "
            "to first "
            f"token: median **{r['median'] / a['median']:.2f}x**, mean "
            f"**{r['mean'] / a['mean']:.2f}x**, p90 "
            f"**{r['p90'] / a['p90']:.2f}x**; cached tokens per follow-up {a['cached']:.0f} "
            f"(affinity) vs {r['cached']:.0f} (round robin)."
        )
    return lines


VARIANT_LABEL = {SHARED: "one shared document", OWN: "a document per conversation"}
VARIANT_TEXT = {
    SHARED: "**one shared document** (all conversations carry the very same document, as a "
    "shared system prompt would)",
    OWN: "**a document per conversation** (no two conversations share more than the chat "
    "template's first tokens)",
}
HEAD = [
    "engine setup",
    "workload",
    "routing",
    "follow-up TTFT median (s)",
    "mean (s)",
    "p90 (s)",
    "cached / prompt tokens (mean)",
    "follow-ups that re-read the document",
    "turn-1 TTFT median (s)",
    "run (s)",
    "replica choices",
]


def run_order(report: dict[str, Any]) -> str:
    return ", ".join(
        f"{r['setup']}/{r['variant']}/{r['strategy']} {r['load_average']:.1f}"
        for r in report["runs"]
    )


def setups_text(meta: dict[str, Any]) -> str:
    return "; ".join(
        f"**{name}** `{json.dumps(fields) if fields else 'as is'}`"
        for name, fields in meta["setups"].items()
    )


def markdown_section(report: dict[str, Any]) -> str:
    meta = report["meta"]
    o = meta["options"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    placements = "; ".join(f"{r['name']}: {r['placement']}" for r in report["runs"][0]["replicas"])
    lines = [
        MARK_START,
        "## Engine replicas: prefix affinity vs round robin",
        "",
        f"Written by `bench/prefix_affinity.py` on {meta['date']}; rerun it rather than editing "
        "this section.",
        "",
        machine_line(meta["machine"])[:-1] + f", {meta['load_average_at_end']} at the end)",
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}`",
        f"- **Hearth's config** (a fresh `hearth serve` per run; `replica_routing` and the "
        f"engine setup differ): `{meta['config_inline']}`; engine setups (model entry fields "
        f"over that): {setups_text(meta)}; the replicas ran pinned as {placements}, each "
        "llama-server with `--threads` equal to its cores",
        "",
        f"**Method.** {o['conversations']} conversations at once, {o['turns']} turns each, every "
        "turn sent when the conversation's previous answer has ended. A turn's prompt is a "
        f"document of about {meta['document_tokens']} tokens (the system message: "
        f"{o['sentences']} numbered sentences), the conversation so far and a new question; the "
        f"answer is {o['max_tokens']} tokens (temperature 0, end-of-sequence banned with "
        "`logit_bias`), streamed. Time to first token is from sending the request to its first "
        "content chunk, measured by the client; cached tokens are the engine's "
        "`usage.prompt_tokens_details.cached_tokens` (prompt tokens it did not have to "
        "evaluate), from the stream's usage chunk. Time waiting in Hearth's queue for a slot "
        "counts (`request_queue_timeout` is raised so that no request is refused). Workloads: "
        + "; ".join(VARIANT_TEXT[v] for v in meta["variants"])
        + ". Each run starts from a fresh Hearth whose replicas have served nothing; "
        f"each setup and workload ran {o['rounds']} time(s) with each routing, the two routings "
        "taking turns going first (runs in order, with the load average as each started: "
        f"{run_order(report)}), and the figures pool the rounds. Follow-up turns are turns 2 to "
        f"{o['turns']} ({o['conversations'] * (o['turns'] - 1)} per run); replica choices are "
        "`hearth_replica_choices_total` at the end of each run, summed. A follow-up *re-read "
        "the document* when its replica held less than half of its prompt.",
        "",
        "| " + " | ".join(HEAD) + " |",
        "|---|---|---|" + "|".join("---:" for _ in HEAD[3:-1]) + "|---|",
        *("| " + " | ".join(cells) + " |" for cells in table_rows(report)),
        "",
        *ratios(report),
        "",
        *meta.get("notes", []),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="follow-up turns (2..N)")
    for column in HEAD:
        view.add_column(column)
    for cells in table_rows(report):
        view.add_row(*(c.replace("`", "") for c in cells))
    console.print(view)
    for line in ratios(report):
        console.print(line.replace("**", ""))


# -- Command line --------------------------------------------------------------------------------


@dataclass
class Options:
    conversations: int
    turns: int
    rounds: int
    sentences: int
    max_tokens: int
    variants: list[str]
    setups: dict[str, dict[str, Any]]
    parallel: int | None
    ctx_size: int | None
    engine_args: str
    llama_server: Path | None
    startup_timeout: float
    request_timeout: float
    note: list[str]
    output: Path
    json: Path | None


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/prefix_affinity.py",
        description="Follow-up time to first token over two replicas, affinity vs round robin.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--conversations", type=int, default=8)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--rounds", type=int, default=1, help="runs of each workload and routing")
    p.add_argument("--sentences", type=int, default=100, help="document length (~15 tokens each)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens per answer")
    p.add_argument(
        "--variants",
        default=f"{SHARED},{OWN}",
        help=f"workloads to run: {SHARED} (one document for all), {OWN} (one each)",
    )
    p.add_argument(
        "--setup",
        dest="setups",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="engine settings to compare, as model entry fields over the common ones, e.g. "
        '\'no RAM cache={"extra_args": ["--cache-ram", "0"]}\' (repeatable; default: '
        "one setup, Hearth's defaults)",
    )
    p.add_argument("--parallel", type=int, help="slots per replica (default: Hearth's)")
    p.add_argument("--ctx-size", type=int, help="context per replica (default: Hearth's)")
    p.add_argument("--engine-args", default="", help="extra llama-server flags, e.g. '-cram 0'")
    p.add_argument("--llama-server", type=Path, help="binary (default: the one Hearth finds)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds per start")
    p.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--note", action="append", default=[], help="a line to add to the section")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    ns = p.parse_args(argv)
    ns.variants = [v.strip() for v in ns.variants.split(",") if v.strip()]
    setups: dict[str, dict[str, Any]] = {}
    for given in ns.setups or [f"{DEFAULT_SETUP}={{}}"]:
        name, _, fields = given.partition("=")
        try:
            setups[name.strip()] = dict(json.loads(fields or "{}"))
        except (ValueError, TypeError):
            p.error(f"--setup {given!r}: not NAME=JSON object")
    ns.setups = setups
    if not ns.variants or set(ns.variants) - {SHARED, OWN}:
        p.error(f"--variants takes {SHARED} and/or {OWN}")
    if ns.conversations < 1 or ns.turns < 2 or ns.rounds < 1:
        p.error("at least one conversation, two turns and one round")
    return Options(**vars(ns))


def benchmark(
    options: Options, console: Console, processes: Processes, work: Path
) -> dict[str, Any]:
    settings = load_settings()
    binary = locate_llama_server(options.llama_server or settings.llama_server, settings.tools_dir)
    model = ensure_bundled_model(settings.models_dir)
    payload: dict[str, Any] = {
        "max_tokens": options.max_tokens,
        "temperature": 0.0,
        "logit_bias": {str(token): -100 for token in end_token_ids(model)},
    }
    start_machine = machine()
    runs, samples = [], []
    # The two routings take turns going first (A R R A ...), so that neither always meets the
    # machine when it is busier: other work on a small machine moves these figures.
    n = 0
    for round_ in range(1, options.rounds + 1):
        for setup in options.setups:
            for variant in options.variants:
                order = (AFFINITY, ROUND_ROBIN) if n % 2 == 0 else (ROUND_ROBIN, AFFINITY)
                n += 1
                for strategy in order:
                    case = Case(setup, variant, strategy, round_)
                    run, got = one_run(
                        case, options, processes, work, model, binary.path, payload, console
                    )
                    runs.append(run)
                    samples += got
                    if options.json is not None:  # what a later failure would otherwise lose
                        partial = options.json.with_name(options.json.name + ".partial")
                        partial.write_text(
                            json.dumps(
                                {
                                    "runs": [asdict(r) for r in runs],
                                    "samples": [asdict(x) for x in samples],
                                }
                            )
                        )
    first_turns = [s.prompt_tokens for s in samples if s.turn == 1]
    config = hearth_config("<affinity | round_robin>", {}, options)
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": start_machine,
            "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "versions": {"Hearth": hearth.__version__, "llama-server": engine_version(binary.path)},
            "python": platform.python_version(),
            "command": shlex.join(["python", "bench/prefix_affinity.py", *sys.argv[1:]]),
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "variants": options.variants,
            "setups": options.setups,
            "document_tokens": int(round(statistics.median(first_turns), -1)),
            "config_inline": yaml.safe_dump(
                config, default_flow_style=True, sort_keys=False, width=10**6
            ).strip(),
            "notes": options.note,
        },
        "runs": [asdict(r) for r in runs],
        "samples": [asdict(s) for s in samples],
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    try:
        load_settings()
    except HearthError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
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
