"""The llama-server build step: idempotent, and clear about what is missing.

A full build takes ~6 minutes, so it runs in `make setup` (before the tests), not in a test; here
the cache hit and the failure paths are checked.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hearth.engines.llama_cpp import build
from hearth.engines.llama_cpp.locate import (
    CONVERT_LORA_SCRIPT,
    QUANTIZE_BINARY_NAME,
    RPC_BINARY_NAME,
    conversion_script,
    tools_binary,
)
from hearth.errors import SetupError


def test_a_cached_binary_is_reused_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tools_binary(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\necho 'version: 7 (cafe)'\n")
    cached.chmod(cached.stat().st_mode | stat.S_IEXEC)
    tools_binary(tmp_path, RPC_BINARY_NAME).write_text("#!/bin/sh\n")
    tools_binary(tmp_path, QUANTIZE_BINARY_NAME).write_text("#!/bin/sh\n")
    conversion_script(tmp_path).parent.mkdir(parents=True)
    conversion_script(tmp_path).write_text("")

    def no_fetch(*args: object) -> Path:
        raise AssertionError("a cached engine must not be rebuilt")

    monkeypatch.setattr(build, "_fetch_sources", no_fetch)
    assert build.ensure_llama_server(tmp_path) == cached


@pytest.mark.parametrize(
    "present", [(), (RPC_BINARY_NAME,), (RPC_BINARY_NAME, QUANTIZE_BINARY_NAME)]
)
def test_an_incomplete_cache_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: tuple[str, ...]
) -> None:
    """A cache from before rpc-server, llama-quantize or the conversion scripts were kept
    alongside is completed, not trusted."""
    cached = tools_binary(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\necho 'version: 7 (cafe)'\n")
    cached.chmod(cached.stat().st_mode | stat.S_IEXEC)
    for name in present:
        tools_binary(tmp_path, name).write_text("#!/bin/sh\n")

    class Rebuilt(Exception):
        pass

    def fetch(*args: object) -> Path:
        raise Rebuilt

    monkeypatch.setattr(build, "_check_toolchain", lambda: None)
    monkeypatch.setattr(build, "_fetch_sources", fetch)
    with pytest.raises(Rebuilt):
        build.ensure_llama_server(tmp_path)


def test_missing_toolchain_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SetupError, match=r"needs cmake.*apt-get install cmake build-essential"):
        build.ensure_llama_server(tmp_path / "tools")


def test_the_engine_that_make_setup_built_is_the_cached_one(llama_server_binary: Path) -> None:
    """`make test` runs `hearth setup` first; unless a binary was configured or is on PATH, the
    one the tests use is the cached build, with its build record beside it."""
    if llama_server_binary != tools_binary(llama_server_binary.parents[2]):
        pytest.skip(f"using a llama-server from elsewhere: {llama_server_binary}")
    info = llama_server_binary.parents[1] / "build-info.json"
    assert "llama_cpp_python" in info.read_text()
    assert (llama_server_binary.parent / RPC_BINARY_NAME).is_file()
    assert (llama_server_binary.parent / QUANTIZE_BINARY_NAME).is_file()
    scripts = conversion_script(llama_server_binary.parents[2])
    assert (scripts.parent / CONVERT_LORA_SCRIPT).is_file()
    assert (scripts.parent / "gguf-py" / "gguf" / "__init__.py").is_file()
