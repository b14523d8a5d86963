"""Building llama-server from the llama.cpp tree inside the pinned llama-cpp-python sdist.

The result is one static binary cached under the tools folder, keyed by source version and
machine, so a second `hearth setup` (or CI on the same machine) costs nothing. A lock file keeps
two concurrent set-ups from building at once; the binary is moved into place only when complete,
so an interrupted build never leaves a half-written engine behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hearth.engines.llama_cpp.flags import CMAKE_FLAGS, LLAMA_CPP_PYTHON_VERSION
from hearth.engines.llama_cpp.locate import (
    BINARY_NAME,
    CONVERT_TREE,
    QUANTIZE_BINARY_NAME,
    RPC_BINARY_NAME,
    RPC_BUILD_TARGET,
    build_key,
    conversion_script,
    engine_version,
    tools_binary,
)
from hearth.errors import SetupError

_PERCENT = re.compile(r"^\[\s*(\d+)%\]")

# Progress callback: (stage description, percent done or None).
Progress = Callable[[str, int | None], None]


def _no_progress(stage: str, percent: int | None) -> None:
    pass


@contextmanager
def _build_lock(tools_dir: Path) -> Iterator[None]:
    tools_dir.mkdir(parents=True, exist_ok=True)
    with (tools_dir / f".{build_key()}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_llama_server(
    tools_dir: Path, *, jobs: int | None = None, progress: Progress = _no_progress
) -> Path:
    """Return the cached llama-server, building it (and rpc-server, llama-quantize and the
    conversion scripts beside it) first if any is missing or llama-server is broken."""
    target = tools_binary(tools_dir)
    with _build_lock(tools_dir):
        if _complete(tools_dir):
            try:
                engine_version(target)
                return target
            except SetupError:
                pass  # a broken binary is rebuilt
        _check_toolchain()
        build_root = tools_dir / "build"
        build_root.mkdir(parents=True, exist_ok=True)
        for stale in build_root.glob("tmp*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        log_path = build_root / f"{build_key()}.log"
        with tempfile.TemporaryDirectory(dir=build_root) as workdir:
            source = _fetch_sources(Path(workdir), log_path, progress)
            built = _compile(source, log_path, jobs or os.cpu_count() or 2, progress)
            _install(built, source, target)
        engine_version(target)
        return target


def _complete(tools_dir: Path) -> bool:
    return (
        all(
            tools_binary(tools_dir, name).is_file()
            for name in (BINARY_NAME, RPC_BINARY_NAME, QUANTIZE_BINARY_NAME)
        )
        and conversion_script(tools_dir).is_file()
    )


def _check_toolchain() -> None:
    missing = [tool for tool in ("cmake", "c++", "make") if shutil.which(tool) is None]
    if missing:
        raise SetupError(
            f"building llama-server needs {', '.join(missing)}; install them "
            "(Debian/Ubuntu: apt-get install cmake build-essential) and run `hearth setup` again"
        )


def _run_logged(
    cmd: list[str], log_path: Path, cwd: Path | None, on_line: Callable[[str], None]
) -> None:
    with log_path.open("a", encoding="utf-8", buffering=1) as log_file:
        log_file.write(f"\n$ {' '.join(cmd)}\n")
        log_file.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log_file.write(line)
                on_line(line)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if code != 0:
        raise SetupError(f"`{' '.join(cmd[:3])} …` failed (exit {code}); see {log_path}")


def _fetch_sources(workdir: Path, log_path: Path, progress: Progress) -> Path:
    progress(f"downloading llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sources", None)
    _run_logged(
        [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--disable-pip-version-check", "-d", str(workdir),
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
        ],
        log_path, None, lambda line: None,
    )  # fmt: skip
    archives = list(workdir.glob("llama_cpp_python-*.tar.gz"))
    if not archives:
        raise SetupError(f"pip download gave no llama-cpp-python source archive; see {log_path}")
    progress("unpacking sources", None)
    with tarfile.open(archives[0]) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuse links and paths outside
            archive.extractall(workdir, filter="data")
        else:  # Debian 12's 3.11.2: the same checks by hand
            root = workdir.resolve()
            for member in archive.getmembers():
                target = (workdir / member.name).resolve()
                if not target.is_relative_to(root):
                    raise SetupError(f"unsafe path in the llama.cpp sources: {member.name}")
            archive.extractall(workdir)
    trees = list(workdir.glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not trees or not (trees[0] / "CMakeLists.txt").is_file():
        raise SetupError("the llama-cpp-python archive has no vendor/llama.cpp tree")
    return trees[0]


def _compile(source: Path, log_path: Path, jobs: int, progress: Progress) -> Path:
    build_dir = source / "build"
    progress("configuring llama.cpp (cmake)", None)
    _run_logged(["cmake", "-B", str(build_dir), *CMAKE_FLAGS], log_path, source, lambda line: None)

    def on_line(line: str) -> None:
        match = _PERCENT.match(line)
        if match:
            progress(f"compiling llama-server with {jobs} jobs", int(match.group(1)))

    progress(f"compiling llama-server with {jobs} jobs", 0)
    _run_logged(
        ["cmake", "--build", str(build_dir), "--target", BINARY_NAME, RPC_BUILD_TARGET,
         QUANTIZE_BINARY_NAME, "-j", str(jobs)],
        log_path, source, on_line,
    )  # fmt: skip
    built = build_dir / "bin"
    for name in (BINARY_NAME, RPC_BUILD_TARGET, QUANTIZE_BINARY_NAME):
        if not (built / name).is_file():
            raise SetupError(f"the build finished but {built / name} is missing; see {log_path}")
    return built


def _install(built: Path, source: Path, target: Path) -> None:
    """The binaries and conversion scripts into the cache; llama-server last, since its presence
    marks a full build."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scripts = conversion_script(target.parents[2]).parent
    partial_scripts = scripts.with_name(".convert.partial")
    shutil.rmtree(partial_scripts, ignore_errors=True)
    partial_scripts.mkdir(parents=True)
    for name in CONVERT_TREE:
        if (source / name).is_dir():
            shutil.copytree(source / name, partial_scripts / name)
        else:
            shutil.copy2(source / name, partial_scripts / name)
    shutil.rmtree(scripts, ignore_errors=True)
    partial_scripts.replace(scripts)
    for built_name, name in (
        (RPC_BUILD_TARGET, RPC_BINARY_NAME),
        (QUANTIZE_BINARY_NAME, QUANTIZE_BINARY_NAME),
        (BINARY_NAME, BINARY_NAME),
    ):
        partial = target.with_name(f".{name}.partial")
        shutil.copy2(built / built_name, partial)
        partial.chmod(0o755)
        partial.replace(target.with_name(name))
    info = {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "cmake_flags": CMAKE_FLAGS,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (target.parent.parent / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
