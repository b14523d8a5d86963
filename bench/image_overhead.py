"""What one image adds to a request's time to first token, through Hearth and through llama-server
directly, in the same run (issue 18).

Builds the tests' tiny Gemma-3-style vision-language model (tests/support/tiny_models.py: two text
layers, one SigLIP layer, random weights), converts it with llama.cpp's own converter into a text
model and a projector, and starts `hearth serve` (the model with `mmproj`) and `llama-server`
with exactly the command line Hearth's launcher builds for it. Each target is sent the same
streamed chat request with one 512x512 PNG (random pixels, as a data: URL) and the same text
alone, interleaved in rotating order, `cache_prompt: false` so that every request reads its image
again. Writes its own section of docs/benchmarks.md; it reports, it never asserts.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import importlib.util
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
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
from hearth.config import ModelSettings, Settings
from hearth.engines.gpu import Accelerators
from hearth.engines.llama_cpp.locate import conversion_script, engine_version, locate_llama_server
from hearth.engines.ports import free_port
from hearth.engines.registry import default_registry
from hearth.engines.spec import EngineContext
from hearth.errors import HearthError
from hearth.models.store import ModelStore
from hearth.settings_layers import load_settings

ROOT = Path(__file__).resolve().parents[1]
SECTION = "image-overhead"
MARK_START, MARK_END = markers(SECTION)
HEARTH, DIRECT = "Hearth", "llama-server"
TEXT, IMAGE = "text alone", "text + 512x512 image"
QUESTION = "What is in this picture?"
ENGINE = {"ctx_size": 4096, "parallel": 1}


def random_png(size: int, seed: int) -> bytes:
    """A size x size RGB PNG of random pixels (incompressible, as photographs nearly are)."""
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(size * 3) for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )


def tiny_models_module() -> Any:
    """tests/support/tiny_models.py (the tests' own builder, not a package of Hearth's)."""
    path = ROOT / "tests" / "support" / "tiny_models.py"
    spec = importlib.util.spec_from_file_location("tiny_models", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(work: Path, console: Console, settings: Settings) -> tuple[Path, Path]:
    """The tiny vision model as (text GGUF, projector GGUF), converted with llama.cpp's script."""
    script = conversion_script(settings.tools_dir)
    if not script.is_file():
        raise BenchError(f"{script} is missing: run `hearth setup` first")
    with console.status("building the tiny vision model"):
        folder = tiny_models_module().make_tiny_gemma3_vlm(work / "checkpoint")
        outputs = (work / "tiny-vlm-F16.gguf", work / "mmproj-F16.gguf")
        for extra, out in zip(([], ["--mmproj"]), outputs, strict=True):
            argv = [sys.executable, str(script), str(folder), *extra]
            done = subprocess.run(
                [*argv, "--outfile", str(out), "--outtype", "f16"], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise BenchError(f"conversion failed: {done.stderr[-1000:]}")
    return outputs


@dataclass
class Sample:
    target: str
    kind: str
    repeat: int
    ttft: float
    prompt_tokens: int


def first_token(client: httpx.Client, url: str, content: Any) -> tuple[float, int]:
    """Seconds from sending a streamed chat request to its first chunk with a choice, and the
    prompt tokens the usage reports at the end."""
    body = {
        "model": "seer",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": False,
        "temperature": 0,
    }
    started = time.perf_counter()
    ttft: float | None = None
    prompt_tokens = 0
    # A new connection each time, alike for both targets: llama-server once dropped a kept-alive
    # connection as the next request went out on it.
    headers = {"connection": "close"}
    with client.stream(
        "POST", url + "/v1/chat/completions", json=body, headers=headers
    ) as response:
        if response.status_code != 200:
            raise BenchError(f"{url} answered {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if ttft is None and event.get("choices"):
                ttft = time.perf_counter() - started
            if event.get("usage"):
                prompt_tokens = int(event["usage"]["prompt_tokens"])
    if ttft is None:
        raise BenchError(f"{url} streamed no choice")
    return ttft, prompt_tokens


def benchmark(
    options: Options, console: Console, processes: Processes, work: Path, binary: Path
) -> dict[str, Any]:
    at_start = machine()
    settings = load_settings()
    text_model, projector = build_model(work, console, settings)
    image = random_png(512, seed=7)
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    contents = {
        TEXT: [{"type": "text", "text": QUESTION}],
        IMAGE: [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": data_url}},
        ],
    }
    config = {
        "preload": ["seer"],
        "prompt_cache_max": 0,  # no slot files: the same command line as llama-server's below
        "models": {"seer": {"model": str(text_model), "mmproj": str(projector), **ENGINE}},
    }
    config_path = work / "hearth.yaml"
    config_path.write_text(yaml.safe_dump(config))
    data_dir = work / "data"
    hearth_port = free_port()
    hearth_argv = [sys.executable, "-m", "hearth", "serve", "--config", str(config_path),
                   "--data-dir", str(data_dir), "--port", str(hearth_port)]  # fmt: skip
    env = {**os.environ, "HEARTH_LLAMA_SERVER": str(binary)}
    processes.start(
        Server(HEARTH, hearth_argv, hearth_port, "/ready", work / "hearth.log", env),
        options.startup_timeout,
    )
    context = EngineContext(
        settings, Accelerators("none"), ModelStore(work / "store"), work / "none.gguf", binary
    )
    model = ModelSettings(model=str(text_model), mmproj=str(projector), **ENGINE)
    direct_port = free_port()
    launcher = default_registry().build("seer", model, context).launcher
    direct_argv = launcher.command(HOST, direct_port).argv
    processes.start(
        Server(DIRECT, direct_argv, direct_port, "/health", work / "llama-server.log"),
        options.startup_timeout,
    )
    urls = {HEARTH: f"http://{HOST}:{hearth_port}", DIRECT: f"http://{HOST}:{direct_port}"}
    samples: list[Sample] = []
    kinds = [(target, kind) for target in urls for kind in contents]
    with httpx.Client(timeout=options.request_timeout, trust_env=False) as client:
        for target, kind in kinds:  # warm-up, untimed
            first_token(client, urls[target], contents[kind])
        with console.status("measuring"):
            for repeat in range(1, options.repeats + 1):
                shift = repeat % len(kinds)
                for target, kind in kinds[shift:] + kinds[:shift]:
                    ttft, tokens = first_token(client, urls[target], contents[kind])
                    samples.append(Sample(target, kind, repeat, ttft, tokens))
    replacements = {str(text_model): "<tiny-vlm-F16.gguf>", str(projector): "<mmproj-F16.gguf>"}
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": at_start,
            "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "versions": {"hearth": hearth.__version__, "llama-server": engine_version(binary)},
            "python": sys.version.split()[0],
            "command": "make bench-images" + (f" ARGS='{options.argv}'" if options.argv else ""),
            "image_bytes": len(image),
            "data_url_bytes": len(data_url),
            "repeats": options.repeats,
            "direct_command": shown(direct_argv, replacements),
            "config": {
                "models": {
                    "seer": {
                        "model": "<tiny-vlm-F16.gguf>",
                        "mmproj": "<mmproj-F16.gguf>",
                        **ENGINE,
                    }
                }
            },
        },
        "samples": [s.__dict__ for s in samples],
    }


def values(samples: Sequence[dict[str, Any]], target: str, kind: str) -> list[float]:
    return [s["ttft"] * 1000 for s in samples if s["target"] == target and s["kind"] == kind]


def median(samples: Sequence[dict[str, Any]], target: str, kind: str) -> float:
    return statistics.median(values(samples, target, kind))


def cell(found: list[float]) -> str:
    return f"{statistics.median(found):.1f} ({min(found):.1f} to {max(found):.1f})"


def tokens(samples: Sequence[dict[str, Any]], kind: str) -> str:
    return ", ".join(sorted({str(s["prompt_tokens"]) for s in samples if s["kind"] == kind}))


def table_rows(samples: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for target in (HEARTH, DIRECT):
        text, image = median(samples, target, TEXT), median(samples, target, IMAGE)
        rows.append(
            [target, cell(values(samples, target, TEXT)), cell(values(samples, target, IMAGE)),
             f"{image - text:+.1f}"]
        )  # fmt: skip
    gateway = [
        median(samples, HEARTH, kind) - median(samples, DIRECT, kind) for kind in (TEXT, IMAGE)
    ]
    rows.append(["Hearth - llama-server", f"{gateway[0]:+.1f}", f"{gateway[1]:+.1f}",
                 f"{gateway[1] - gateway[0]:+.1f}"])  # fmt: skip
    return rows


def markdown_section(report: dict[str, Any]) -> str:
    meta, samples = report["meta"], report["samples"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    lines = [
        MARK_START,
        "## Image requests: time to first token with one image",
        "",
        f"Written by `bench/image_overhead.py` on {meta['date']}; rerun it rather than editing "
        "this section.",
        "",
        machine_line(meta["machine"])[:-1] + f", {meta['load_average_at_end']} at the end)",
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}`",
        "- **Model:** the tests' tiny Gemma-3-style vision model (two text layers, one SigLIP "
        "layer, random weights, 64x64 input: 16 image tokens), converted with llama.cpp's "
        "`convert_hf_to_gguf.py` (text model and `--mmproj` projector, f16)",
        f"- **Hearth's config:** `{json.dumps(meta['config'])}`, `prompt_cache_max: 0`",
        f"- **llama-server:** `{meta['direct_command']}` (the command Hearth's launcher builds)",
        "",
        "**Method.** The same streamed `/v1/chat/completions` request (4 tokens, temperature 0, "
        "`cache_prompt: false` so each request reads its image again) is sent with the text "
        f"alone and with one 512x512 PNG of random pixels ({meta['image_bytes']:,} bytes; "
        f"{meta['data_url_bytes']:,} as a data: URL), to Hearth and to llama-server, one at a "
        f"time, in rotating order, after one untimed request of each kind; {meta['repeats']} "
        "repeats. Time to first token: from sending the request to the first chunk with a "
        "choice. Cells: median in ms (min to max). Prompt tokens, as the engines reported "
        f"them: {tokens(samples, TEXT)} for the text alone, {tokens(samples, IMAGE)} with the "
        "image. With the image, Hearth also checks the data URL (base64, format, size: "
        "`upstream/images.py`) and carries the larger body through its pipeline; the engine "
        "decodes the PNG, resizes it to 64x64 and runs the projector. The tiny model makes the "
        "engine's share small, so the gateway's share shows; a real projector (SigLIP 400M) "
        "takes seconds per image on a CPU.",
        "",
        f"| target | {TEXT} | {IMAGE} | image adds |",
        "|---|---:|---:|---:|",
        *("| " + " | ".join(cells) + " |" for cells in table_rows(samples)),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="time to first token, ms: median (min to max)")
    for column in ("target", TEXT, IMAGE, "image adds"):
        view.add_column(column, justify="left" if column == "target" else "right")
    for cells in table_rows(report["samples"]):
        view.add_row(*cells)
    console.print(view)


@dataclass
class Options:
    repeats: int
    llama_server: Path | None
    startup_timeout: float
    request_timeout: float
    output: Path
    json: Path | None
    argv: str


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/image_overhead.py",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--repeats", type=int, default=20, help="timed requests per target and kind")
    p.add_argument("--llama-server", type=Path, help="the llama-server binary (default: Hearth's)")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--request-timeout", type=float, default=120.0)
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    a = p.parse_args(argv)
    return Options(a.repeats, a.llama_server, a.startup_timeout, a.request_timeout, a.output,
                   a.json, " ".join(argv))  # fmt: skip


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
        measure=lambda processes, work: benchmark(options, console, processes, work, binary),
        show=show,
        markdown=markdown_section,
    )


if __name__ == "__main__":
    sys.exit(main())
