"""What the Responses API translation adds over chat completions: the same static nginx upstream
(see gateway_overhead.py), one Hearth in front of it, the same prompt sent as
`POST /v1/chat/completions` and as `POST /v1/responses` (with `store` false, and with `store`
true, which also writes the answer to the database), whole and streamed, one request at a time,
interleaved in rotating order so that drift hits every kind alike. Writes its own section of
docs/benchmarks.md; it reports, it never asserts."""

from __future__ import annotations

import argparse
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
from gateway_overhead import (
    MODEL,
    SSE_MODEL,
    find_nginx,
    hearth_config,
    nginx_config,
    nginx_version,
)
from hearth.engines.ports import free_port

SECTION = "responses"
MARK_START, MARK_END = markers(SECTION)
PROMPT = "Say something."
TARGET_MS = 1.0  # what the translation may add at the median
CHAT = "chat completions"
KINDS = [
    (CHAT, False, None),
    ("responses, store false", False, False),
    ("responses, store true", False, True),
    (CHAT, True, None),
    ("responses, store false", True, False),
    ("responses, store true", True, True),
]


def request_of(kind: str, stream: bool, store: bool | None) -> tuple[str, dict[str, Any]]:
    model = SSE_MODEL if stream else MODEL
    if store is None:
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return "/v1/chat/completions", body
    return "/v1/responses", {"model": model, "input": PROMPT, "stream": stream, "store": store}


def timed(client: httpx.Client, path: str, body: dict[str, Any], stream: bool) -> float:
    """Seconds from sending the request to the end of its answer (the whole stream)."""
    start = time.perf_counter()
    if stream:
        with client.stream("POST", path, json=body) as answer:
            for _ in answer.iter_bytes():
                pass
            status = answer.status_code
    else:
        status = client.post(path, json=body).status_code
    took = time.perf_counter() - start
    if status != 200:
        raise BenchError(f"POST {path} answered {status}")
    return took


def check_answers(client: httpx.Client) -> None:
    """The Responses answers are real ones (text, usage), not errors that happen to be fast."""
    whole = client.post("/v1/responses", json={"model": MODEL, "input": PROMPT}).json()
    if whole.get("status") != "completed" or not whole.get("usage", {}).get("output_tokens"):
        raise BenchError(f"an unexpected Responses answer: {str(whole)[:300]}")
    body = {"model": SSE_MODEL, "input": PROMPT, "stream": True}
    with client.stream("POST", "/v1/responses", json=body) as answer:
        text = "".join(answer.iter_text())
    if "response.completed" not in text or "response.output_text.delta" not in text:
        raise BenchError(f"an unexpected Responses stream: {text[:300]}")


def measure_kinds(client: httpx.Client, requests: int, warmup: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {label(k): [] for k in KINDS}
    plans = [(label(k), *request_of(*k), k[1]) for k in KINDS]
    for i in range(warmup + requests):
        shift = i % len(plans)
        for name, path, body, stream in plans[shift:] + plans[:shift]:
            took = timed(client, path, body, stream)
            if i >= warmup:
                samples[name].append(took * 1000)
    return samples


def label(kind: tuple[str, bool, bool | None]) -> str:
    return f"{kind[0]} ({'streamed' if kind[1] else 'whole'})"


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
        "requests": len(ordered),
    }


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
    config = work / "hearth.yaml"
    config.write_text(yaml.safe_dump(hearth_config(port), sort_keys=False), encoding="utf-8")
    hport = free_port(HOST)
    argv = [sys.executable, "-m", "hearth", "serve", "--config", str(config)]
    argv += ["--host", HOST, "--port", str(hport), "--data-dir", str(work / "hearth-data")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    gateway = Server("Hearth", argv, hport, "/ready", work / "hearth.log", env)
    processes.start(gateway, options.startup_timeout)
    rounds: list[dict[str, list[float]]] = []
    with httpx.Client(base_url=gateway.base_url, timeout=30, trust_env=False) as client:
        check_answers(client)
        for number in range(options.rounds):
            console.print(f"round {number + 1} of {options.rounds}")
            rounds.append(measure_kinds(client, options.requests, options.warmup))
    kinds: dict[str, Any] = {}
    for name in rounds[0]:
        every = [ms for measured in rounds for ms in measured[name]]
        kinds[name] = summary(every) | {
            "round_medians_ms": [statistics.median(measured[name]) for measured in rounds]
        }
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": host,
        "versions": {"Hearth": hearth.__version__, "nginx": nginx_version(nginx)},
        "rounds": options.rounds,
        "requests_per_round": options.requests,
        "warmup": options.warmup,
        "kinds": kinds,
    }


def added(report: dict[str, Any], name: str) -> float:
    """Median of `name` less the median of chat completions sent the same way."""
    way = name.rsplit(" (", 1)[1]
    return float(
        report["kinds"][name]["median_ms"] - report["kinds"][f"{CHAT} ({way}"]["median_ms"]
    )


def rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for name, figures in report["kinds"].items():
        extra = "" if name.startswith(CHAT) else f"{added(report, name):+.2f}"
        spread = ", ".join(f"{ms:.2f}" for ms in figures["round_medians_ms"])
        out.append([name, f"{figures['median_ms']:.2f}", f"{figures['p90_ms']:.2f}", spread, extra])
    return out


HEADERS = ["request", "median ms", "p90 ms", "round medians ms", "added over chat ms"]


def markdown(report: dict[str, Any]) -> str:
    table = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    table += ["| " + " | ".join(row) + " |" for row in rows(report)]
    worst = max(added(report, name) for name in report["kinds"] if "store false" in name)
    verdict = "met" if worst <= TARGET_MS else "not met"
    return "\n".join(
        [
            MARK_START,
            "## Responses API translation overhead",
            "",
            f"Run of {report['date']} by `bench/responses_overhead.py` (`make bench-responses`).",
            "",
            machine_line(report["machine"]),
            f"- **Versions:** Hearth {report['versions']['Hearth']}, "
            f"nginx {report['versions']['nginx']}",
            "",
            "**Method.** nginx (one worker) answers chat completions with a fixed 16-token answer "
            "(whole, or streamed as 16 chunks with usage), as in the gateway benchmark; one "
            "Hearth (no keys, SQLite) serves it as a remote deployment. The same prompt goes "
            "in as `POST /v1/chat/completions` and as `POST /v1/responses` (with `store: false`, "
            "and with `store: true`, which also writes the answer to the database before it is "
            "returned), whole and streamed, one request at a time over one keep-alive "
            "connection, the six kinds interleaved in rotating order; each time is from sending "
            "the request to the end of the answer (the whole stream). "
            f"{report['rounds']} rounds of {report['requests_per_round']} requests per kind "
            f"after {report['warmup']} of warm-up.",
            "",
            *table,
            "",
            f"Target: the translation (`store: false`) adds at most {TARGET_MS:g} ms at the "
            f"median over chat completions: **{verdict}** (largest: {worst:+.2f} ms). "
            "`store: true` adds the database write on top.",
            MARK_END,
            "",
        ]
    )


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="Responses API over chat completions, same upstream, same run")
    for header in HEADERS:
        view.add_column(header)
    for row in rows(report):
        view.add_row(*row)
    console.print(view)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=200, help="per kind and round")
    p.add_argument("--warmup", type=int, default=30, help="per kind and round, not counted")
    p.add_argument("--nginx", type=Path, help="nginx binary (default: PATH, then /usr/sbin)")
    p.add_argument("--startup-timeout", type=float, default=60.0)
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
