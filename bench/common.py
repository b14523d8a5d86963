"""Helpers shared by the benchmarks: the processes they start, the model, the docs section.

Every server binds to 127.0.0.1 and is stopped by pid (SIGTERM, then SIGKILL) by `Processes`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from hearth.engines.process import die_with_parent_hook, tail
from hearth.errors import HearthError

HOST = "127.0.0.1"
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
STOP_GRACE_S = 20.0  # Hearth waits up to 10 s for its engine on shutdown
# What Hearth's supervisor adds to a llama.cpp chat model's command line while its prompt cache
# (`prompt_cache_max`) is on: where to save slots, and a full-size cache for sliding-window layers.
PROMPT_CACHE_FLAGS = "the prompt cache's `--slot-save-path <dir> --swa-full`"
# Besides the metadata's EOS, llama.cpp (and so llama-cpp-python) ends generation on these.
END_TOKEN_TEXTS = {"<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>"}


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler that unwinds like Ctrl-C, so the servers get stopped."""
    raise KeyboardInterrupt


# -- Processes -----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    ready_path: str
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


class Processes:
    """Every process this script starts; `stop_all` ends them by pid, SIGTERM then SIGKILL."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.servers: list[Server] = []
        # Started by a server of ours and must end with it: pid -> its command line then.
        self.orphan_watch: dict[int, list[str]] = {}

    def spawn(self, server: Server) -> None:
        """Start a server and return at once (see `start` to wait until it is ready)."""
        server.log_path.parent.mkdir(parents=True, exist_ok=True)
        with server.log_path.open("ab") as log:
            # Own session, so a terminal's Ctrl-C reaches only this script, which stops them.
            # Spawned while no other thread runs (no progress display), as preexec_fn requires.
            server.proc = subprocess.Popen(
                server.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server.env,
                start_new_session=True,
                preexec_fn=die_with_parent_hook(),
            )
        self.servers.append(server)

    def start(self, server: Server, timeout: float) -> None:
        self.spawn(server)
        with self.console.status(f"starting {server.name} (log: {server.log_path})"):
            took = wait_ready(server, timeout)
        self.console.print(f"{server.name} ready in {took:.1f} s on port {server.port}")

    def watch(self, pid: int) -> None:
        """Kill `pid` at the end if it outlives the server that started it."""
        self.orphan_watch[pid] = _cmdline(pid)

    def stop(self, server: Server) -> None:
        """Stop one server now and forget it."""
        self._stop([server])
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        self._stop(self.servers)
        for pid, cmdline in self.orphan_watch.items():
            # The command line guards against a pid reused since the process ended.
            if _alive(pid) and _cmdline(pid) == cmdline:
                self.console.print(f"[yellow]pid {pid} outlived its parent; sending SIGKILL[/]")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _stop(self, servers: Sequence[Server]) -> None:
        running = [s for s in servers if s.proc is not None and s.proc.poll() is None]
        for server in running:
            assert server.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for server in running:
            assert server.proc is not None
            try:
                server.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                self.console.print(f"[yellow]{server.name} is still running; sending SIGKILL[/]")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.proc.pid, signal.SIGKILL)
                server.proc.wait()


def wait_ready(server: Server, timeout: float, interval: float = 0.25) -> float:
    """Poll the readiness path until it answers 200; returns the seconds it took."""
    start = time.monotonic()
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while True:
            assert server.proc is not None
            if server.proc.poll() is not None:
                raise BenchError(
                    f"{server.name} exited with status {server.proc.returncode} while starting; "
                    f"the end of {server.log_path}:\n{tail(server.log_path)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get(server.base_url + server.ready_path).status_code == 200:
                    return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise BenchError(
                    f"{server.name} was not ready after {timeout:.0f} s; "
                    f"the end of {server.log_path}:\n{tail(server.log_path)}"
                )
            time.sleep(interval)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def _cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    return []


def check_hearth_engine(hearth_pid: int, direct_argv: list[str]) -> tuple[int | None, str]:
    """Find the engine Hearth started and compare its command line with the direct one's."""
    engines = [pid for pid in _children(hearth_pid) if "--alias" in _cmdline(pid)]
    if not engines:
        return None, "Hearth's engine command line could not be read from /proc."

    def normal(argv: list[str]) -> list[str]:
        out = list(argv)
        for i, arg in enumerate(argv[:-1]):
            if arg == "--port":
                out[i + 1] = "<port>"
            elif arg == "--model":  # Hearth's data folder holds a link to the same file
                out[i + 1] = str(Path(argv[i + 1]).resolve())
        # Hearth's supervisor adds its prompt cache's flags (see PROMPT_CACHE_FLAGS); the
        # launcher's command line, started directly, has none.
        if "--slot-save-path" in out[:-1]:
            at = out.index("--slot-save-path")
            del out[at : at + 2]
        return [arg for arg in out if arg != "--swa-full"]

    actual, wanted = normal(_cmdline(engines[0])), normal(direct_argv)
    if actual == wanted:
        return engines[0], (
            "Hearth's engine ran with the same command line (checked in /proc), besides "
            f"{PROMPT_CACHE_FLAGS}."
        )
    return engines[0], (
        f"**Hearth's engine ran with different flags:** `{shlex.join(actual)}` "
        f"(direct: `{shlex.join(wanted)}`)"
    )


# -- The model -----------------------------------------------------------------------------------


def end_token_ids(model: Path) -> list[int]:
    """The EOS token from the GGUF metadata, plus the other tokens llama.cpp stops on."""
    from gguf import GGUFReader

    reader = GGUFReader(str(model))

    def scalar(key: str) -> int | None:
        found = reader.fields.get(key)
        return None if found is None else int(found.parts[found.data[0]][0])

    eos = scalar("tokenizer.ggml.eos_token_id")
    if eos is None:
        raise BenchError(f"{model} has no tokenizer.ggml.eos_token_id")
    ids = {eos}
    for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        if (value := scalar(key)) is not None:
            ids.add(value)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    for index, part in enumerate(tokens.data):
        if bytes(tokens.parts[part]).decode("utf-8", "replace") in END_TOKEN_TEXTS:
            ids.add(index)
    return sorted(ids)


def prepare_data_dir(data_dir: Path, model: Path) -> None:
    """A fresh Hearth data folder whose model is a link to the already assembled one."""
    models = data_dir / "models"
    models.mkdir(parents=True)
    (models / model.name).symlink_to(model)
    checksum = model.with_name(model.name + ".sha256")
    if checksum.is_file():  # Hearth trusts the model with this file; without it, it re-assembles
        shutil.copy(checksum, models / checksum.name)


# -- Reporting -----------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    info = {"cpu": platform.processor() or platform.machine(), "cores": str(os.cpu_count())}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram"] = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    info["load_average_at_start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def machine_line(m: dict[str, str]) -> str:
    """The Markdown bullet that describes the machine."""
    return (
        f"- **Machine:** {m['cpu']}, {m['cores']} cores, {m.get('ram', '? GiB')} RAM "
        f"(load average {m['load_average_at_start']} at the start)"
    )


def shown(argv: Sequence[str], replacements: dict[str, str]) -> str:
    """A command line for the docs: local paths and the port replaced by placeholders."""
    out = [replacements.get(arg, arg) for arg in argv]
    for i, arg in enumerate(argv[:-1]):
        if arg == "--port":
            out[i + 1] = "<port>"
    return " ".join(arg if arg.startswith("<") else shlex.quote(arg) for arg in out)


def markers(name: str) -> tuple[str, str]:
    """The comments that delimit a script's section of docs/benchmarks.md."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


DOC_HEADER = """# Benchmarks

Each section below is written by a script in [`bench/`](../bench/README.md), between its own
markers; rerunning a script replaces only its section. Timings depend on the machine and on what
else runs on it: compare numbers from the same run.
"""


def write_section(path: Path, section: str, name: str) -> None:
    """Replace the section between `name`'s markers, or append it; the rest stays as it is."""
    start, end = markers(name)
    text = path.read_text(encoding="utf-8") if path.exists() else DOC_HEADER
    block = re.compile(re.escape(start) + ".*?" + re.escape(end) + r"\n?", re.S)
    if block.search(text):
        text = block.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def run_and_report(
    console: Console,
    *,
    section: str,
    output: Path,
    json_path: Path | None,
    measure: Callable[[Processes, Path], dict[str, Any]],
    show: Callable[[Console, dict[str, Any]], None],
    markdown: Callable[[dict[str, Any]], str],
) -> int:
    """Run `measure` with a scratch folder and a process list that is always stopped (on success,
    error, Ctrl-C or SIGTERM), then print the report and write its docs/benchmarks.md section."""
    work = Path(tempfile.mkdtemp(prefix=f"hearth-bench-{section}-"))
    processes = Processes(console)
    previous = signal.signal(signal.SIGTERM, interrupt)  # stop the servers on SIGTERM too
    ok = False
    try:
        report = measure(processes, work)
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
    write_section(output, markdown(report), section)
    console.print(f"updated the {section} section of {output}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        console.print(f"raw results: {json_path}")
    return 0
