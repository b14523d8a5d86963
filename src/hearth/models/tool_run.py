"""Running one of llama.cpp's tools (the conversion script, llama-quantize) as a child process:
its output read line by line as it comes (progress bars' carriage returns end a line too), the
child stopped if Hearth is interrupted, and the end of its output kept for the error message."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 5.0
TAIL_LINES = 40


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    tail: tuple[str, ...]  # the last lines of its output (stdout and stderr together)


def run_tool(
    argv: list[str],
    on_line: Callable[[str], None],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> ToolResult:
    """Run `argv` to its end, calling `on_line` with each line of its output. Any exception
    (KeyboardInterrupt from Ctrl-C, or one `on_line` raises) stops the child first: SIGTERM, then
    SIGKILL after a grace period."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    pending = b""
    try:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            pending += chunk
            *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    tail.append(line)
                    on_line(line)
        if pending.strip():
            line = pending.decode("utf-8", "replace").rstrip()
            tail.append(line)
            on_line(line)
        code = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    finally:
        proc.stdout.close()
    return ToolResult(code, tuple(tail))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
