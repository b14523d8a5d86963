"""A conversation's next turn after its model was swapped out and back in, with and without
restoring its saved prompt cache (issue 15, benchmark (b)).

Starts two `hearth serve` processes with the bundled Gemma 3 270M model, the same settings but
for `prompt_cache_max` (the default, 2 GiB: restore on; 0: off). For each, a conversation opens
with a ~1,500-token message; the model is unloaded (swapped out) and the next turn is timed to its
first token, once with the model loaded by that turn and once with it loaded beforehand. Writes
its own section of docs/benchmarks.md (see bench/README.md); it reports, it never asserts.
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
    shown,
)
from hearth.config import Settings
from hearth.engines.llama_cpp.locate import engine_version, locate_llama_server
from hearth.engines.ports import free_port
from hearth.errors import HearthError
from hearth.models.bundled import BUNDLED_MODEL_NAME, ensure_bundled_model
from hearth.settings_layers import load_settings

SECTION = "prompt-cache-restore"
MARK_START, MARK_END = markers(SECTION)
MODEL = BUNDLED_MODEL_NAME
ON, OFF = "restore on", "restore off"
MODES = {ON: {}, OFF: {"prompt_cache_max": 0}}  # config beyond the common part

# Measurement kinds, as stored in the raw results.
FIRST = "first_turn"  # model loaded, a new conversation: its whole prompt is read
UNLOAD = "unload"  # POST /admin/models/{name}/unload answered (the slots saved, when on)
NEXT_COLD = "next_turn_loading"  # model unloaded: the next turn loads it, then answers
LOAD = "load"  # Ollama's load request (POST /api/generate with no prompt) answered
NEXT_WARM = "next_turn_loaded"  # model unloaded, then loaded again: the next turn answers

QUESTIONS = ["Which colour came first?", "And which came last?", "How many notes were there?"]
COLOURS = ["red", "green", "blue", "grey", "amber"]


def prefix(tag: str, sentences: int) -> str:
    """About 18 tokens a sentence; `tag` first, so no two conversations share a prefix."""
    notes = " ".join(
        f"Note {i}: the {COLOURS[i % 5]} lighthouse keeper counted {i * 7} ships before dawn."
        for i in range(1, sentences + 1)
    )
    return f"[{tag}] {notes}"


@dataclass
class Turn:
    first_token: float
    content: str
    prompt_tokens: int
    cached_tokens: int | None


@dataclass
class Sample:
    mode: str
    kind: str
    repeat: int
    seconds: float
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


def chat(
    client: httpx.Client, base_url: str, messages: list[dict[str, str]], payload: dict[str, Any]
) -> Turn:
    """One streamed chat turn: seconds from sending it to its first content chunk, the answer,
    and the usage the engine reported (cached tokens: the prompt prefix it did not read again).
    No seed is sent: with one, the engine is asked not to reuse its prompt cache."""
    body = payload | {
        "model": MODEL,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage: dict[str, Any] = {}
    try:
        with client.stream("POST", base_url + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise BenchError(f"HTTP {response.status_code}: {response.text[:500]}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if text := (choice.get("delta") or {}).get("content"):
                        first = first if first is not None else time.perf_counter() - sent
                        parts.append(text)
    except (httpx.HTTPError, ValueError) as exc:
        raise BenchError(f"{base_url} did not answer a chat turn: {exc!r}") from None
    if first is None:
        raise BenchError(f"{base_url} streamed no content")
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens")
    return Turn(first, "".join(parts), int(usage.get("prompt_tokens", 0)), cached)


def timed_post(client: httpx.Client, url: str, body: dict[str, Any] | None = None) -> float:
    sent = time.perf_counter()
    response = client.post(url, json=body)
    took = time.perf_counter() - sent
    if response.status_code != 200:
        raise BenchError(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
    return took


class Bench:
    def __init__(
        self,
        servers: dict[str, Server],
        options: Options,
        console: Console,
        payload: dict[str, Any],
    ) -> None:
        self.servers = servers
        self.options = options
        self.console = console
        self.payload = payload
        self.samples: list[Sample] = []
        timeout = httpx.Timeout(options.startup_timeout + options.request_timeout, connect=10.0)
        self.client = httpx.Client(timeout=timeout, trust_env=False)

    def record(self, sample: Sample) -> None:
        self.samples.append(sample)
        cached = "" if sample.cached_tokens is None else f"  cached {sample.cached_tokens}"
        self.console.print(
            f"repeat {sample.repeat}  {sample.mode:<11} {sample.kind:<18} "
            f"{sample.seconds:7.3f} s{cached}"
        )

    def unload(self, url: str) -> float:
        return timed_post(self.client, f"{url}/admin/models/{MODEL}/unload")

    def load(self, url: str) -> float:
        return timed_post(self.client, f"{url}/api/generate", {"model": MODEL})

    def conversation(self, mode: str, repeat: int) -> None:
        """One conversation: open it, swap the model out, the next turn loads it; swap it out
        again, load it, the next turn. Starts and ends with the model unloaded."""
        url = self.servers[mode].base_url
        text = prefix(f"conversation {repeat} {mode}", self.options.sentences)
        messages = [{"role": "user", "content": f"{text}\n\n{QUESTIONS[0]}"}]

        def turn(kind: str) -> None:
            answer = chat(self.client, url, messages, self.payload)
            if repeat:
                self.record(
                    Sample(
                        mode,
                        kind,
                        repeat,
                        answer.first_token,
                        answer.prompt_tokens,
                        answer.cached_tokens,
                    )
                )
            messages.append({"role": "assistant", "content": answer.content})
            if len(messages) // 2 < len(QUESTIONS):
                messages.append({"role": "user", "content": QUESTIONS[len(messages) // 2]})

        def step(kind: str, seconds: float) -> None:
            if repeat:
                self.record(Sample(mode, kind, repeat, seconds))

        step(LOAD, self.load(url))
        turn(FIRST)
        step(UNLOAD, self.unload(url))
        turn(NEXT_COLD)  # loads the model
        step(UNLOAD, self.unload(url))
        step(LOAD, self.load(url))
        turn(NEXT_WARM)
        step(UNLOAD, self.unload(url))

    def run(self) -> list[Sample]:
        with self.client:
            self.console.print("warm-up: one untimed conversation each (page cache, first load)")
            for mode in MODES:
                self.conversation(mode, 0)
            for repeat in range(1, self.options.repeats + 1):
                order = list(MODES) if repeat % 2 else list(reversed(MODES))
                for mode in order:
                    self.conversation(mode, repeat)
        return self.samples


# -- Results -------------------------------------------------------------------------------------


def values(samples: Sequence[dict[str, Any]], mode: str, kind: str) -> list[float]:
    return [s["seconds"] for s in samples if s["mode"] == mode and s["kind"] == kind]


def cell(found: list[float]) -> str:
    if not found:
        return "n/a"
    return f"{statistics.median(found):.3f} ({min(found):.3f} to {max(found):.3f})"


def ratio(samples: Sequence[dict[str, Any]], kind: str) -> str:
    on, off = values(samples, ON, kind), values(samples, OFF, kind)
    if not on or not off:
        return "n/a"
    text = f"{statistics.median(off) / statistics.median(on):.2f}x"
    return f"**{text}**" if kind in (NEXT_COLD, NEXT_WARM) else text


def cached(samples: Sequence[dict[str, Any]], mode: str, kind: str) -> str:
    found = [
        f"{s['cached_tokens']}/{s['prompt_tokens']}"
        for s in samples
        if s["mode"] == mode and s["kind"] == kind and s["cached_tokens"] is not None
    ]
    return ", ".join(sorted(set(found), key=found.index)) or "n/a"


ROWS = [
    ("First turn, model loaded (whole prompt read)", FIRST),
    ("Unload (`POST /admin/models/{name}/unload`; saves the slots when on)", UNLOAD),
    ("**Next turn, model unloaded: the turn loads it** -> first token", NEXT_COLD),
    ("Load (Ollama `POST /api/generate`, no prompt; restores when on)", LOAD),
    ("**Next turn, model swapped back in** -> first token", NEXT_WARM),
]


def table_rows(samples: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [label, cell(values(samples, ON, kind)), cell(values(samples, OFF, kind)),
         ratio(samples, kind) if kind in (NEXT_COLD, NEXT_WARM, FIRST) else ""]
        for label, kind in ROWS
    ]  # fmt: skip


def markdown_section(report: dict[str, Any]) -> str:
    meta, samples = report["meta"], report["samples"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    lines = [
        MARK_START,
        "## Prompt cache restore: a conversation's next turn after a model swap (b)",
        "",
        f"Written by `bench/prompt_cache_restore.py` on {meta['date']}; rerun it rather than "
        "editing this section.",
        "",
        machine_line(meta["machine"])[:-1] + f", {meta['load_average_at_end']} at the end)",
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}`",
        f"- **Model:** `{meta['model']}` (the bundled Gemma 3 270M) with the engine's default "
        "settings (8 slots, 16384 tokens of context)",
        f"- **Hearth's config:** `{meta['config_inline']}`, and for {OFF} also "
        "`prompt_cache_max: 0`",
        "",
        "**Method.** Two `hearth serve` processes run side by side, one measured at a time: "
        f"*{ON}* (`prompt_cache_max` at its default) and *{OFF}*. A conversation opens with a "
        f"{meta['prompt_tokens']}-token message (numbered sentences, tagged so that no two "
        "conversations share a prefix) asking a question; each answer is "
        f"{meta['payload']['max_tokens']} tokens (temperature 0, end-of-sequence banned), sent "
        "back with the next question, and no seed is sent (with one, Hearth asks the engine not "
        "to reuse its cache). After the first turn the model is unloaded through the admin "
        "endpoint (swapped out) and the next turn is sent with it unloaded, so that turn loads "
        "it; then it is unloaded again, loaded with Ollama's load request, and the turn after "
        "is sent. Times run from sending a streamed `/v1/chat/completions` request to its first "
        "chunk with content. One untimed conversation per server comes first (page cache); "
        f"then {meta['options']['repeats']} repeat(s), the servers' order alternating. Cells: "
        "median of the repeats, min to max in brackets, in seconds; the ratio is off / on (on "
        "the first turn, which both read in full, a control: with the prompt cache on, Hearth "
        "also starts llama-server with `--swa-full`). "
        "Cached tokens are the engine's `usage.prompt_tokens_details.cached_tokens` (prompt "
        "tokens it did not read again) / the prompt's tokens. On a small machine shared with "
        "other work (see the load averages), llama.cpp's threads stall whenever another process "
        "takes a core, so single samples can be far off: read the medians and the ratios.",
        "",
        f"- Hearth ({ON}): `{meta['commands'][ON]}`",
        "",
        f"| measurement | {ON} | {OFF} | ratio |",
        "|---|---:|---:|---:|",
        *("| " + " | ".join(cells) + " |" for cells in table_rows(samples)),
        "",
        f"Cached tokens / prompt tokens, next turn loading the model: {ON} "
        f"{cached(samples, ON, NEXT_COLD)}; {OFF} {cached(samples, OFF, NEXT_COLD)}. "
        f"Swapped back in: {ON} {cached(samples, ON, NEXT_WARM)}; "
        f"{OFF} {cached(samples, OFF, NEXT_WARM)}.",
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="seconds: median of repeats (min to max)")
    for column in ("measurement", ON, OFF, "off / on"):
        view.add_column(column, justify="left" if column == "measurement" else "right")
    for cells in table_rows(report["samples"]):
        view.add_row(*(c.replace("**", "").replace("`", "") for c in cells))
    console.print(view)


# -- Command line --------------------------------------------------------------------------------


@dataclass
class Options:
    repeats: int
    sentences: int
    max_tokens: int
    llama_server: Path | None
    startup_timeout: float
    request_timeout: float
    output: Path
    json: Path | None


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/prompt_cache_restore.py",
        description="Next-turn time to first token after a model swap, slot restore on vs off.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--repeats", type=int, default=5, help="conversations per server")
    p.add_argument("--sentences", type=int, default=83, help="~18 tokens each (83: ~1,500)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens per answer")
    p.add_argument("--llama-server", type=Path, help="binary (default: the one Hearth finds)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds per start")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    ns = p.parse_args(argv)
    for name in ("repeats", "sentences", "max_tokens"):
        if getattr(ns, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(**vars(ns))


def benchmark(
    options: Options,
    console: Console,
    processes: Processes,
    work: Path,
    settings: Settings,
    binary: Path,
) -> dict[str, Any]:
    model = ensure_bundled_model(settings.models_dir)
    common: dict[str, Any] = {"preload": [], "keep_alive": -1}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["HEARTH_LLAMA_SERVER"] = str(binary)
    servers: dict[str, Server] = {}
    commands: dict[str, str] = {}
    for mode, extra in MODES.items():
        folder = work / mode.replace(" ", "-")
        data_dir = folder / "hearth-data"
        prepare_data_dir(data_dir, model)
        config_path = folder / "hearth.yaml"
        config_path.write_text(yaml.safe_dump(common | extra, sort_keys=False), encoding="utf-8")
        port = free_port(HOST)
        argv = [sys.executable, *f"-m hearth serve --host {HOST} --port {port}".split()]
        argv += ["--data-dir", str(data_dir), "--config", str(config_path)]
        servers[mode] = Server(f"Hearth ({mode})", argv, port, "/ready", folder / "hearth.log", env)
        processes.start(servers[mode], options.startup_timeout)
        replacements = {str(data_dir): "<data-dir>", str(config_path): "<config.yaml>"}
        commands[mode] = shown(argv, replacements | {sys.executable: "python"})

    payload: dict[str, Any] = {
        "max_tokens": options.max_tokens,
        "temperature": 0.0,
        "logit_bias": {str(token): -100 for token in end_token_ids(model)},
    }
    start_machine = machine()
    samples = Bench(servers, options, console, payload).run()
    prompt_tokens = [s.prompt_tokens for s in samples if s.kind == FIRST and s.prompt_tokens]
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": start_machine,
            "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "versions": {"Hearth": hearth.__version__, "llama-server": engine_version(binary)},
            "python": platform.python_version(),
            "command": shlex.join(["python", "bench/prompt_cache_restore.py", *sys.argv[1:]]),
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "config_inline": yaml.safe_dump(
                common, default_flow_style=True, sort_keys=False, width=10**6
            ).strip(),
            "commands": commands,
            "model": model.name,
            "payload": payload,
            "prompt_tokens": round(statistics.median(prompt_tokens)) if prompt_tokens else "n/a",
        },
        "samples": [asdict(s) for s in samples],
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    try:
        settings = load_settings()
        binary = locate_llama_server(
            options.llama_server or settings.llama_server, settings.tools_dir
        ).path
    except HearthError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    return run_and_report(
        console,
        section=SECTION,
        output=options.output,
        json_path=options.json,
        measure=lambda processes, work: benchmark(
            options, console, processes, work, settings, binary
        ),
        show=show,
        markdown=markdown_section,
    )


if __name__ == "__main__":
    sys.exit(main())
