"""What task-aware routes add per request: a route with eight rules and a route with a semantic
classifier, against the same route without either, through one Hearth in front of the static
nginx upstream of gateway_overhead.py, in the same run; and one embeddings call of the bundled
all-minilm-l6-v2 (the classifier's model) measured beside them.

Two measures: Hearth's own time per request (`x-hearth-overhead-ms`: from arrival to the start of
the answer, upstream time excluded, so what a route's rules add shows undiluted), requests one
at a time and interleaved in rotating order; and the rule decision alone, in this process
(`routing.rules.decide` over the same settings, many times). Writes its own section of
docs/benchmarks.md; it reports, it never asserts."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Sequence
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
)
from gateway_overhead import MODEL, find_nginx, nginx_config, nginx_version
from hearth.config import Settings
from hearth.deployments.catalogue import Catalogue
from hearth.deployments.remote import add_remote_deployments, add_routes
from hearth.engines.ports import free_port
from hearth.routing.request import RoutedRequest, Trace
from hearth.routing.rules import build_rule_book, decide

SECTION = "route-rules"
MARK_START, MARK_END = markers(SECTION)
EMBEDDINGS = "all-minilm-l6-v2"
RULES_TARGET_MS = 0.1
PROMPT = "Can you help me write a function in Python to reverse a list? " * 3
# Eight rules of every cheap kind; the request meets none of them, so each is checked.
RULES: list[dict[str, Any]] = [
    {"tools": True, "to": MODEL},
    {"images": True, "to": MODEL},
    {"json_schema": True, "to": MODEL},
    {"prompt_tokens_over": 4000, "to": MODEL},
    {"system_matches": "(?i)you are a (senior )?programmer", "to": MODEL},
    {"message_matches": r"\b(def|class|import)\s+\w+\(", "to": MODEL},
    {"team": ["red"], "to": MODEL},
    {"header": {"x-task": "code"}, "to": MODEL},
]
CLASSES = {
    "code": [
        "Write a Python function that reverses a string.",
        "Why does my JavaScript code throw an undefined error?",
        "How do I sort a list of dictionaries by a key in Python?",
    ],
    "cooking": [
        "Give me a recipe for chocolate chip cookies.",
        "How long should I boil an egg for a soft yolk?",
        "What spices go well with roast lamb?",
    ],
    "travel": [
        "What should I pack for a week in Iceland?",
        "Which neighbourhoods in Lisbon are best to stay in?",
        "How do I get from the airport to the city centre in Tokyo?",
    ],
}
KINDS = ["plain", "rules", "classifier"]


def hearth_config(nginx_port: int) -> dict[str, Any]:
    return {
        "preload": [EMBEDDINGS],
        "deployments": {MODEL: {"url": f"http://{HOST}:{nginx_port}/json/v1", "model": MODEL}},
        "routes": {
            "plain": {"deployments": [MODEL]},
            "rules": {"deployments": [MODEL], "rules": RULES},
            "classifier": {
                "deployments": [MODEL],
                "classifier": {"model": EMBEDDINGS, "min_similarity": 0.25, "classes": CLASSES},
                "rules": [{"class": "code", "to": MODEL}],
            },
        },
    }


def chat(client: httpx.Client, route: str) -> tuple[float, float, str]:
    """Hearth's own ms, the whole request's ms, and the route reason."""
    body = {"model": route, "messages": [{"role": "user", "content": PROMPT}]}
    start = time.perf_counter()
    answer = client.post("/v1/chat/completions", json=body)
    took = (time.perf_counter() - start) * 1000
    if answer.status_code != 200:
        raise BenchError(f"{route} answered {answer.status_code}: {answer.text[:200]}")
    return (
        float(answer.headers["x-hearth-overhead-ms"]),
        took,
        answer.headers.get("x-hearth-route-reason", ""),
    )


def embed(client: httpx.Client) -> float:
    """One embeddings call of the prompt through Hearth, in ms, as a client sees it."""
    start = time.perf_counter()
    answer = client.post("/v1/embeddings", json={"model": EMBEDDINGS, "input": PROMPT})
    took = (time.perf_counter() - start) * 1000
    if answer.status_code != 200:
        raise BenchError(f"embeddings answered {answer.status_code}: {answer.text[:200]}")
    return took


def measure_round(client: httpx.Client, requests: int, warmup: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        **{f"{k} overhead": [] for k in KINDS},
        **{f"{k} total": [] for k in KINDS},
        "embedding call": [],
    }
    plans = [*KINDS, "embedding call"]
    for i in range(warmup + requests):
        shift = i % len(plans)
        for kind in plans[shift:] + plans[:shift]:
            if kind == "embedding call":
                took = embed(client)
                if i >= warmup:
                    samples[kind].append(took)
                continue
            overhead, total, _ = chat(client, kind)
            if i >= warmup:
                samples[f"{kind} overhead"].append(overhead)
                samples[f"{kind} total"].append(total)
    return samples


def decision_micros(config: dict[str, Any], decisions: int) -> float:
    """µs per `decide` over the eight rules, in this process (no HTTP, no upstream)."""
    settings = Settings.model_validate({"preload": [], **config})
    catalogue = Catalogue()
    add_remote_deployments(catalogue, settings)
    add_routes(catalogue, settings)
    book = build_rule_book({"rules": settings.routes["rules"]}, catalogue)
    route = catalogue.resolve("rules")
    rules = book.get(route)
    assert rules is not None
    fields = {"model": "rules", "messages": [{"role": "user", "content": PROMPT}]}

    async def never(*args: Any) -> Any:
        raise AssertionError("no rule here embeds or counts with a model")

    async def run() -> float:
        start = time.perf_counter()
        for _ in range(decisions):
            request = RoutedRequest(
                route, "/chat/completions", fields, "chat", "bench", Trace(0.0), headers={}
            )
            decision = await decide(rules, request, never, never, lambda d: False)
        took = time.perf_counter() - start
        assert decision.route is None
        return took / decisions * 1e6

    return asyncio.run(run())


def benchmark(options: argparse.Namespace, processes: Processes, work: Path) -> dict[str, Any]:
    console = processes.console
    host = machine()
    nginx = find_nginx(options.nginx)
    root = work / "nginx"
    root.mkdir(parents=True)
    port = free_port(HOST)
    conf = root / "nginx.conf"
    conf.write_text(nginx_config(root, port), encoding="utf-8")
    argv = [str(nginx), "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
    processes.start(Server("nginx", argv, port, "/json/v1/models", work / "nginx.log"), 30)
    config = hearth_config(port)
    path = work / "hearth.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    hport = free_port(HOST)
    argv = [sys.executable, "-m", "hearth", "serve", "--config", str(path)]
    argv += ["--host", HOST, "--port", str(hport), "--data-dir", str(work / "hearth-data")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    gateway = Server("Hearth", argv, hport, "/ready", work / "hearth.log", env)
    processes.start(gateway, options.startup_timeout)
    rounds: list[dict[str, list[float]]] = []
    with httpx.Client(base_url=gateway.base_url, timeout=60, trust_env=False) as client:
        reasons = {kind: chat(client, kind)[2] for kind in KINDS}
        if reasons != {
            "plain": "",
            "rules": "strategy:priority",
            "classifier": "rule:1 class:code",
        }:
            raise BenchError(f"unexpected route reasons: {reasons}")
        for number in range(options.rounds):
            console.print(f"round {number + 1} of {options.rounds}")
            rounds.append(measure_round(client, options.requests, options.warmup))
    console.print(f"timing {options.decisions} rule decisions in-process")
    figures: dict[str, Any] = {}
    for name in rounds[0]:
        every = sorted(ms for measured in rounds for ms in measured[name])
        figures[name] = {
            "median_ms": statistics.median(every),
            "p90_ms": every[int(0.9 * (len(every) - 1))],
            "round_medians_ms": [statistics.median(measured[name]) for measured in rounds],
        }
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": host,
        "versions": {"Hearth": hearth.__version__, "nginx": nginx_version(nginx)},
        "rounds": options.rounds,
        "requests_per_round": options.requests,
        "warmup": options.warmup,
        "figures": figures,
        "decision_us": decision_micros(config, options.decisions),
        "decisions": options.decisions,
    }


def added(report: dict[str, Any], kind: str) -> float:
    figures = report["figures"]
    return float(figures[f"{kind} overhead"]["median_ms"] - figures["plain overhead"]["median_ms"])


def rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for name, f in report["figures"].items():
        kind = name.split()[0]
        compared = name.endswith("overhead") and kind != "plain"
        extra = f"{added(report, kind):+.3f}" if compared else ""
        spread = ", ".join(f"{ms:.3f}" for ms in f["round_medians_ms"])
        out.append([name, f"{f['median_ms']:.3f}", f"{f['p90_ms']:.3f}", spread, extra])
    return out


HEADERS = ["measure", "median ms", "p90 ms", "round medians ms", "added over plain ms"]


def verdicts(report: dict[str, Any]) -> tuple[str, str, float]:
    rules = max(added(report, "rules"), report["decision_us"] / 1000)
    ratio = added(report, "classifier") / report["figures"]["embedding call"]["median_ms"]
    return (
        "met" if rules < RULES_TARGET_MS else "not met",
        "met" if ratio < 1 else "not met",
        ratio,
    )


def round_ratios(report: dict[str, Any]) -> list[float]:
    """The classifier's added time over one embeddings call, round by round."""
    f = report["figures"]
    return [
        (classified - plain) / embedding
        for classified, plain, embedding in zip(
            f["classifier overhead"]["round_medians_ms"],
            f["plain overhead"]["round_medians_ms"],
            f["embedding call"]["round_medians_ms"],
            strict=True,
        )
    ]


def markdown(report: dict[str, Any]) -> str:
    table = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    table += ["| " + " | ".join(row) + " |" for row in rows(report)]
    rules_verdict, classifier_verdict, ratio = verdicts(report)
    return "\n".join(
        [
            MARK_START,
            "## Task-aware routes: what rules and a classifier add",
            "",
            f"Run of {report['date']} by `bench/route_rules.py` (`make bench-route-rules`).",
            "",
            machine_line(report["machine"]),
            f"- **Versions:** Hearth {report['versions']['Hearth']}, "
            f"nginx {report['versions']['nginx']}, embeddings model {EMBEDDINGS} "
            "(llama-server, preloaded)",
            "",
            "**Method.** nginx answers chat completions with a fixed answer (as in the gateway "
            "benchmark); one Hearth (no keys, SQLite) serves it under three routes: `plain` "
            "(no rules), `rules` (eight rules: tools, images, json_schema, prompt_tokens_over, "
            "system_matches, message_matches, team, header; the request meets none, so all "
            "eight are checked) and `classifier` (three classes of three examples over "
            f"{EMBEDDINGS}; the request, a 190-character coding question, is classed `code`). "
            "Requests go one at a time over one keep-alive connection, the routes and a "
            "`POST /v1/embeddings` of the same text interleaved in rotating order. "
            "*overhead* is Hearth's own time per request (`x-hearth-overhead-ms`: arrival to "
            "the start of the answer, upstream time excluded; the classifier's embedding call "
            "is Hearth's own work, so it is in it); *total* is the client's. "
            f"{report['rounds']} rounds of {report['requests_per_round']} requests per kind "
            f"after {report['warmup']} of warm-up. Beside them, `routing.rules.decide` over the "
            f"eight rules, {report['decisions']} times in one process: "
            f"**{report['decision_us']:.1f} µs** per request.",
            "",
            *table,
            "",
            f"Targets: rules add under {RULES_TARGET_MS:g} ms: **{rules_verdict}** "
            f"({added(report, 'rules'):+.3f} ms at the median through HTTP, "
            f"{report['decision_us'] / 1000:.4f} ms in-process); the classifier adds less "
            f"than one embedding call: **{classifier_verdict}** (it adds "
            f"{added(report, 'classifier'):.2f} ms, {ratio:.2f} of one embeddings request's "
            f"{report['figures']['embedding call']['median_ms']:.2f} ms; per round: "
            f"{', '.join(f'{r:.2f}' for r in round_ratios(report))}). The classifier makes "
            "one embedding call of the request's text through Hearth's own routing, without "
            "a client's HTTP round trip, so it costs an embeddings request less that round "
            "trip (about 1 ms); on a loaded machine the embeddings engine's time swings by "
            "more than that between requests, and the ratio with it.",
            MARK_END,
            "",
        ]
    )


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="Task-aware routes against the same route without rules, same run")
    for header in HEADERS:
        view.add_column(header)
    for row in rows(report):
        view.add_row(*row)
    console.print(view)
    console.print(f"rule decision in-process: {report['decision_us']:.1f} µs")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=200, help="per kind and round")
    p.add_argument("--warmup", type=int, default=20, help="per kind and round, not counted")
    p.add_argument("--decisions", type=int, default=20000, help="in-process rule decisions")
    p.add_argument("--nginx", type=Path, help="nginx binary (default: PATH, then /usr/sbin)")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--json", type=Path, help="also write the raw results here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()

    def measure(processes: Processes, work: Path) -> dict[str, Any]:
        return benchmark(options, processes, work)

    return run_and_report(
        console,
        section=SECTION,
        output=options.output,
        json_path=options.json,
        measure=measure,
        show=show,
        markdown=markdown,
    )


if __name__ == "__main__":
    sys.exit(main())
