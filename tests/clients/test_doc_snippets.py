"""The snippets of docs/clients.md for the Responses API, the `openai-agents` SDK and the
tokenizer endpoints, run against a real Hearth as tests/api/ollama/test_client_snippets.py runs
the others."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.hearth_server import HearthServer

DOC = Path(__file__).parents[2] / "docs" / "clients.md"
DOC_URL = "http://127.0.0.1:8080"
SNIPPET = re.compile(r"<!-- snippet: (\w+) (\w+) -->\n```\w+\n(.*?)```", re.DOTALL)


def snippet(name: str) -> tuple[str, str]:
    found = {name: (kind, code) for kind, name, code in SNIPPET.findall(DOC.read_text())}
    return found[name]


def run_python(name: str, server: HearthServer, folder: Path) -> str:
    kind, code = snippet(name)
    assert kind == "python" and DOC_URL in code
    script = folder / f"{name}_snippet.py"
    script.write_text(code.replace(DOC_URL, server.base_url))
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(300)
def test_responses_snippet(hearth: HearthServer, tmp_path: Path) -> None:
    printed = run_python("responses", hearth, tmp_path)
    assert 'get_weather {"city": ' in printed
    assert "['message']" in printed  # the continued response's own input


@pytest.mark.timeout(300)
def test_agents_snippet(hearth: HearthServer, tmp_path: Path) -> None:
    printed = run_python("agents", hearth, tmp_path)
    # Each run ended with the tool's answer for the city asked about; the model words the city
    # argument itself ("Rome" or "Rome, Italy"), so only its start is fixed.
    paris, rome = printed.splitlines()[-2:]
    assert paris.startswith("Sunny in Paris") and rome.startswith("Sunny in Rome"), printed


def test_tokenize_snippet(hearth: HearthServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    kind, code = snippet("tokenize")
    assert kind == "shell"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code.replace(DOC_URL, hearth.base_url)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = _json_objects(done.stdout)
    documented = [json.loads(line[2:]) for line in code.splitlines() if line.startswith("# {")]
    assert answers == documented  # the answers the doc shows are the real ones


def _json_objects(text: str) -> list[object]:
    decoder = json.JSONDecoder()
    objects: list[object] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        obj, position = decoder.raw_decode(text, position)
        objects.append(obj)
    return objects
