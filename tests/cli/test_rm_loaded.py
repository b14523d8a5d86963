"""`hearth rm` against a real running Hearth: a loaded model is refused until it is unloaded."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from hearth.models.bundled import bundled_model_path
from hearth.models.store import ModelStore
from support.hearth_server import StartHearth


def test_rm_of_a_loaded_model_is_refused(start_hearth: StartHearth) -> None:
    server = start_hearth()
    models_dir = server.data_dir / "models"
    ModelStore(models_dir).import_file(bundled_model_path(models_dir), "copy", copy=False)
    reload = httpx.post(f"{server.base_url}/admin/reload", timeout=60)
    assert reload.status_code == 200, reload.text
    server.openai().completions.create(model="copy", prompt="Once", max_tokens=2)

    env = {**os.environ, "HEARTH_PORT": str(server.port)}

    def hearth(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hearth", *args, "--data-dir", str(server.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    refused = hearth("rm", "copy")
    assert refused.returncode == 1
    assert "hearth unload copy" in refused.stderr
    assert "copy" in ModelStore(models_dir).names()

    assert hearth("unload", "copy").returncode == 0
    removed = hearth("rm", "copy")
    assert removed.returncode == 0, removed.stderr
    assert "copy" not in ModelStore(models_dir).names()
    assert bundled_model_path(models_dir).is_file()  # a referenced file is never deleted
