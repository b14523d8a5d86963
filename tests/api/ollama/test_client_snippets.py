"""The client snippets of docs/clients.md (the ones marked `<!-- snippet: ... -->`), run against a
real Hearth: the `openai`, `ollama` and `anthropic` SDK examples and the curl ones."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.hearth_server import HearthServer

DOC = Path(__file__).parents[3] / "docs" / "clients.md"
DOC_URL = "http://127.0.0.1:8080"
SNIPPET = re.compile(r"<!-- snippet: (\w+) (\w+) -->\n```\w+\n(.*?)```", re.DOTALL)


def snippets() -> dict[str, tuple[str, str]]:
    return {name: (kind, code) for kind, name, code in SNIPPET.findall(DOC.read_text())}


def test_the_doc_marks_its_snippets() -> None:
    # responses, agents and tokenize are run by tests/clients/test_doc_snippets.py.
    run_elsewhere = {"responses", "agents", "tokenize"}
    assert set(snippets()) == {"openai", "ollama", "anthropic", "curl", *run_elsewhere}


@pytest.mark.parametrize("name", ["openai", "ollama", "anthropic"])
def test_python_snippet(name: str, hearth: HearthServer, tmp_path: Path) -> None:
    kind, code = snippets()[name]
    assert kind == "python" and DOC_URL in code
    script = tmp_path / f"{name}_snippet.py"
    script.write_text(code.replace(DOC_URL, hearth.base_url))
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_curl_snippet(hearth: HearthServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    kind, code = snippets()["curl"]
    assert kind == "shell"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code.replace(DOC_URL, hearth.base_url)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    openai_reply, ollama_reply, anthropic_reply = _json_objects(done.stdout)
    assert openai_reply["object"] == "chat.completion"
    assert ollama_reply["done"] is True and ollama_reply["message"]["role"] == "assistant"
    assert anthropic_reply["type"] == "message"


def _json_objects(text: str) -> list[dict[str, object]]:
    decoder = json.JSONDecoder()
    objects, position = [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        obj, position = decoder.raw_decode(text, position)
        objects.append(obj)
    return objects
