"""Quantization trade-offs: file size, load time and tokens/s per quantization type.

Builds the tests' tiny Llama checkpoint (tests/support/tiny_models.py: random weights, 2 layers,
256 wide; and the same widened with `--widths`), converts it to F16 with `hearth convert`'s code
and quantizes that with `hearth quantize`'s (llama-quantize) to each type; then requantizes the
bundled Gemma 3 270M, which ships as Q4_K_M, to smaller types (`--allow-requantize`). Every file
is served by llama-server started with the command line Hearth's launcher builds for it; after
one untimed request each, rounds of identical `/completion` requests (order rotated per round)
give llama-server's own prompt and generation tokens/s. Writes its own section of
docs/benchmarks.md (see bench/README.md); it reports, it never asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import shlex
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from gguf import GGMLQuantizationType
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
    prepare_data_dir,
    run_and_report,
)
from hearth.config import BUNDLED_MODEL_NAME, Settings
from hearth.deployments.build import build_catalogue
from hearth.engines.llama_cpp.locate import (
    QUANTIZE_BINARY_NAME,
    conversion_script,
    engine_version,
    locate_llama_server,
    tools_binary,
)
from hearth.engines.ports import free_port
from hearth.errors import HearthError
from hearth.models.bundled import ensure_bundled_model
from hearth.models.convert import convert_checkpoint, local_checkpoint
from hearth.models.gguf_info import read_gguf_header, read_gguf_info
from hearth.models.quantize import quantize
from hearth.models.store import ModelStore, StoredModel
from hearth.settings_layers import load_settings

SECTION = "quantization"
MARK_START, MARK_END = markers(SECTION)
ROOT = Path(__file__).resolve().parents[1]
TINY_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
BUNDLED_TYPES = ("Q4_0", "Q3_K_M", "Q2_K")  # smaller than the shipped Q4_K_M
# Words of the tiny model's tokenizer corpus (few pieces each there), a few hundred tokens.
PROMPT = " ".join(
    [
        "Once upon a time there was a small model that lived on a laptop.",
        "The quick brown fox jumps over the lazy dog.",
        "Quantization makes a model smaller and faster on a CPU.",
        "Paris is the capital of France and Rome is the capital of Italy.",
    ]
    * 4
)


@dataclass
class Options:
    rounds: int
    tokens: int
    threads: int
    widths: list[int]
    bundled: bool
    startup_timeout: float
    output: Path
    json: Path | None


@dataclass
class Variant:
    group: str  # "tiny-256", "gemma-3-270m"
    name: str  # the stored model
    type: str  # what it was quantized to (F16 for the conversion, the shipped type as is)
    size: int
    made_in: float | None  # seconds to convert or quantize; None: as shipped
    mix: str  # the weights' types by share of parameters, largest first
    load: float = 0.0  # seconds from engine start to /health 200


@dataclass
class Sample:
    name: str
    round: int
    prompt_tokens: int
    prompt_per_second: float
    generated_tokens: int
    generation_per_second: float
    text: str


def tiny_models_module() -> Any:
    """tests/support/tiny_models.py (the tests' own builder, not a package of Hearth's)."""
    path = ROOT / "tests" / "support" / "tiny_models.py"
    spec = importlib.util.spec_from_file_location("tiny_models", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_variants(
    options: Options, console: Console, store: ModelStore, work: Path, settings: Settings
) -> list[Variant]:
    script = conversion_script(settings.tools_dir)
    quantizer = tools_binary(settings.tools_dir, QUANTIZE_BINARY_NAME)
    for tool in (script, quantizer):
        if not tool.is_file():
            raise BenchError(f"{tool} is missing: run `hearth setup`")
    variants: list[Variant] = []
    builder = tiny_models_module()
    for width in options.widths:
        group = f"tiny-{width}"
        console.print(f"building and converting the tiny Llama, {width} wide")
        folder = builder.make_tiny_llama(work / "checkpoints" / group, hidden_size=width)
        started = time.perf_counter()
        f16 = convert_checkpoint(local_checkpoint(folder), store, script, name=f"{group}:F16")
        variants.append(variant(group, f16, "F16", _since(started)))
        for qtype in TINY_TYPES:
            started = time.perf_counter()
            model = quantize(store, f16.name, qtype, quantizer)
            variants.append(variant(group, model, qtype, _since(started)))
    if options.bundled:
        shipped = store.get(BUNDLED_MODEL_NAME)
        was = read_gguf_info(shipped.path).quantization or "?"
        variants.append(variant(BUNDLED_MODEL_NAME, shipped, was, None))
        for qtype in BUNDLED_TYPES:
            console.print(f"requantizing {BUNDLED_MODEL_NAME} to {qtype}")
            started = time.perf_counter()
            model = quantize(store, shipped.name, qtype, quantizer, allow_requantize=True)
            variants.append(variant(BUNDLED_MODEL_NAME, model, qtype, _since(started)))
    return variants


def variant(group: str, model: StoredModel, qtype: str, made_in: float | None) -> Variant:
    return Variant(group, model.name, qtype, model.path.stat().st_size, made_in, mix(model.path))


def mix(path: Path) -> str:
    """The types of a GGUF's tensors by share of its parameters: `Q8_0 63%, Q4_0 23%, …`."""
    shares: Counter[str] = Counter()
    for tensor in read_gguf_header(path).tensors:
        shares[GGMLQuantizationType(tensor.type).name] += tensor.n_elements
    total = sum(shares.values())
    return ", ".join(f"{name} {count / total:.0%}" for name, count in shares.most_common(3))


def _since(started: float) -> float:
    return time.perf_counter() - started


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


def benchmark(
    options: Options, console: Console, processes: Processes, work: Path, settings: Settings
) -> dict[str, Any]:
    binary = locate_llama_server(settings.llama_server, settings.tools_dir).path
    bundled = ensure_bundled_model(settings.models_dir)
    start_machine = machine()
    data_dir = work / "data"
    prepare_data_dir(data_dir, bundled)
    scratch = Settings.model_validate(
        {
            "data_dir": data_dir,
            "engine": {"parallel": 1, "ctx_size": 2048, "threads": options.threads},
        }
    )
    store = ModelStore(scratch.models_dir)
    variants = make_variants(options, console, store, work, settings)
    catalogue = build_catalogue(scratch, binary, scratch.models_dir / bundled.name)
    servers: dict[str, Server] = {}
    for variant in variants:
        port = free_port(HOST)
        argv = catalogue.local(variant.name).launcher.command(HOST, port).argv
        server = Server(variant.name, argv, port, "/health", work / f"engine-{port}.log")
        started = time.perf_counter()
        processes.start(server, options.startup_timeout)
        variant.load = _since(started)
        servers[variant.name] = server

    names = [v.name for v in variants]
    samples: list[Sample] = []
    with httpx.Client(timeout=600, trust_env=False) as client:
        for name in names:  # untimed: the first request of each warms its buffers
            complete(client, servers[name].base_url, 8)
        for round_ in range(1, options.rounds + 1):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                answer = complete(client, servers[name].base_url, options.tokens)
                t = answer["timings"]
                sample = Sample(
                    name, round_, t["prompt_n"], t["prompt_per_second"],
                    t["predicted_n"], t["predicted_per_second"], answer["content"],
                )  # fmt: skip
                samples.append(sample)
                console.print(
                    f"round {round_}  {name:<24} prompt {sample.prompt_per_second:8.1f} tok/s  "
                    f"generation {sample.generation_per_second:7.1f} tok/s"
                )
    example = catalogue.local(variants[0].name).launcher.command(HOST, 0).argv
    replacements = {str(binary): "llama-server", str(variants[0].name): variants[0].name}
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": start_machine,
            "load_average_at_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "versions": {"Hearth": hearth.__version__, "llama.cpp": engine_version(binary)},
            "python": platform.python_version(),
            "command": shlex.join(["python", "bench/quantization.py", *sys.argv[1:]]),
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "engine_command": _shown(example, replacements, scratch.models_dir),
        },
        "variants": [asdict(v) for v in variants],
        "samples": [asdict(s) for s in samples],
    }


def _shown(argv: list[str], replacements: dict[str, str], models_dir: Path) -> str:
    out = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--port":
            out.append("<port>")
        elif arg.startswith(str(models_dir)):
            out.append("<model.gguf>")
        else:
            out.append(shlex.quote(replacements.get(arg, arg)))
    return " ".join(out)


# -- Results -------------------------------------------------------------------------------------


def median(samples: Sequence[dict[str, Any]], name: str, field: str) -> float:
    return float(statistics.median(s[field] for s in samples if s["name"] == name))


def _agreement(samples: Sequence[dict[str, Any]], name: str, baseline: str) -> str:
    """How much of the baseline's greedy answer this one repeats (first round): the characters
    of their common start over the baseline's length."""

    def first(n: str) -> str:
        return str(next(s["text"] for s in samples if s["name"] == n and s["round"] == 1))

    mine, theirs = first(name), first(baseline)
    common = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
    if common is None:
        common = min(len(mine), len(theirs))
    return f"{common}/{len(theirs)}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    samples = report["samples"]
    rows = []
    baselines: dict[str, dict[str, Any]] = {}
    for v in report["variants"]:
        base = baselines.setdefault(v["group"], v)
        prompt = median(samples, v["name"], "prompt_per_second")
        generation = median(samples, v["name"], "generation_per_second")
        base_prompt = median(samples, base["name"], "prompt_per_second")
        base_generation = median(samples, base["name"], "generation_per_second")
        made = "shipped" if v["made_in"] is None else f"{v['made_in']:.1f}"
        rows.append(
            [
                v["group"],
                v["type"],
                f"{v['size'] / 1e6:.2f}",
                f"{v['size'] / base['size']:.2f}x",
                v["mix"],
                made,
                f"{v['load']:.2f}",
                f"{prompt:.0f}",
                f"{prompt / base_prompt:.2f}x",
                f"{generation:.1f}",
                f"{generation / base_generation:.2f}x",
                _agreement(samples, v["name"], base["name"]),
            ]
        )
    return rows


HEAD = [
    "model",
    "type",
    "file (MB)",
    "size vs first",
    "weights by type",
    "made in (s)",
    "start to /health (s)",
    "prompt tok/s",
    "prompt vs first",
    "generation tok/s",
    "generation vs first",
    "greedy text = first's (chars)",
]


def markdown_section(report: dict[str, Any]) -> str:
    meta = report["meta"]
    options = meta["options"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    cores = int(meta["machine"]["cores"])
    busy = float(meta["machine"]["load_average_at_start"].split()[0]) > cores / 2
    prompt_tokens = report["samples"][0]["prompt_tokens"]
    lines = [
        MARK_START,
        "## Quantization: size, load time and speed per type",
        "",
        f"Written by `bench/quantization.py` on {meta['date']}; rerun it rather than editing "
        "this section.",
        "",
        machine_line(meta["machine"])[:-1] + f", {meta['load_average_at_end']} at the end)",
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}` (`make bench-quantization`)",
        f"- **Engines:** `{meta['engine_command']}`",
        "",
        "**Method.** The tests' tiny Llama (random weights, 2 layers; `tiny-256` is the test "
        "model itself, wider ones the same shape widened) is converted to F16 by `hearth "
        "convert`'s code and quantized to each type by `hearth quantize`'s (llama-quantize, "
        "from F16 every time); the bundled Gemma 3 270M, which ships as Q4_K_M, is requantized "
        'to smaller types with `--allow-requantize`. "Made in" is that conversion or '
        "quantization. Each file is served by its own llama-server with the command line "
        "Hearth's launcher builds (one slot, 2048 context, "
        f'{options["threads"]} thread(s)); "start to /health" is one start each, timed from '
        f"the process start. After one untimed request each, {options['rounds']} rounds send "
        f"every engine, in an order rotated every round, the same `/completion`: a "
        f"{prompt_tokens}-token prompt (for the first row; tokenizers differ between models), "
        f"{options['tokens']} tokens generated at temperature 0 with the end of sequence "
        "ignored. Tokens/s are llama-server's own `timings`, the median of the rounds; ratios "
        "are to the first row of the same model. The last column is a crude quality signal: "
        "how many characters of the first row's greedy answer this type's answer repeats "
        "before it differs.",
        "",
        "| " + " | ".join(HEAD) + " |",
        "|---|---|" + "|".join("---:" for _ in HEAD[2:]) + "|",
        *("| " + " | ".join(cells) + " |" for cells in table_rows(report)),
        "",
        "**Reading it.** The tiny models' weights are noise, so their answers say nothing "
        "about quality (any rounding changes them at once); what they show is the mechanics: "
        "the file shrinks with the type, and the time per token is the engine's overhead plus "
        "reading the weights once, so a smaller type pays off as the model grows (256 wide, "
        "the weights fit in the CPU's cache and the overhead dominates). The bundled model's "
        "rows are a real model, but a special one: Gemma 3 270M is mostly its token "
        "embeddings (262,144 x 640, shared with the output layer), which llama-quantize keeps "
        "at Q8_0 whatever the type, and its 640-wide rows are not a multiple of 256, so the "
        "k-quant types fall back to Q4_0/Q5_0 for those matrices: the weights-by-type column "
        "shows what each file really holds, and why requantizing it saves little. "
        "Requantizing an already-quantized file also compounds the rounding of both "
        "quantizations, so these rows are worse than the same types made from the F16 "
        "original (which Hearth does not ship); llama.cpp warns against it, and `hearth "
        "quantize` asks for `--allow-requantize`. Types that need an importance matrix "
        "(IQ1/IQ2, Q2_K_S) are left out: they need `llama-imatrix` and calibration text. "
        "Upward requantization (Q4_K_M to Q8_0) only makes the file bigger and is not "
        "measured. Perplexity is not measured (no llama-perplexity in the build)."
        + (
            " This run shared the machine with other work (see the load average): single rounds "
            "vary, so read the ratios as rough and rerun on a quiet machine for firmer figures."
            if busy
            else ""
        ),
        MARK_END,
    ]
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="median of rounds")
    for i, head in enumerate(HEAD):
        view.add_column(head, justify="left" if i < 2 else "right")
    for cells in table_rows(report):
        view.add_row(*cells)
    console.print(view)


# -- Command line --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/quantization.py",
        description="File size, load time and tokens/s per quantization type.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rounds", type=int, default=3, help="requests to each engine")
    p.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="CPU threads per engine"
    )
    p.add_argument(
        "--widths", type=lambda s: [int(w) for w in s.split(",")], default=[256, 1024],
        help="hidden sizes of the tiny Llama (256: the test model); multiples of 256",
    )  # fmt: skip
    p.add_argument(
        "--no-bundled", dest="bundled", action="store_false",
        help="leave out the bundled model's requantizations",
    )  # fmt: skip
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds per start")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    ns = p.parse_args(argv)
    for name in ("rounds", "tokens", "threads"):
        if getattr(ns, name) < 1:
            p.error(f"--{name} must be at least 1")
    if any(w < 256 or w % 256 for w in ns.widths):
        p.error("--widths must be multiples of 256 (k-quants work on rows of 256)")
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
