"""Ollama's POST /api/create (presets), and /api/show, /api/tags and /api/delete of a preset,
through a real `hearth serve` on the bundled model with the real `ollama` client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

from support.hearth_server import HearthServer, StartHearth

BASE = "gemma-3-270m"


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth) -> HearthServer:
    return start_hearth()


@pytest.fixture
def client(server: HearthServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.base_url, timeout=120) as client:
        yield client


def create(server: HearthServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/create", json=body, timeout=60)


def test_create_show_chat_and_delete(server: HearthServer, client: ollama.Client) -> None:
    done = client.create(
        model="brief",
        from_=BASE,
        system="You answer in one short sentence.",
        parameters={"num_predict": 4, "temperature": 0, "stop": ["\n\n"]},
    )
    assert done.status == "success"
    assert "brief:latest" in [m.model for m in client.list().models]
    assert "brief" in [m.id for m in server.openai().models.list()]

    shown = client.show("brief")
    raw = httpx.post(f"{server.base_url}/api/show", json={"model": "brief:latest"}).json()
    assert raw["system"] == "You answer in one short sentence."  # the SDK does not read it
    assert shown.parameters is not None and "num_predict" in shown.parameters
    assert shown.modelfile is not None and f"FROM {BASE}" in shown.modelfile
    assert shown.details is not None and shown.details.family == "gemma3"
    assert shown.details.parent_model == BASE

    # The preset's num_predict reaches the real engine; the request's own wins.
    answer = client.chat("brief", messages=[{"role": "user", "content": "Tell me a story."}])
    assert answer.eval_count is not None and 0 < answer.eval_count <= 4
    longer = client.chat(
        "brief",
        messages=[{"role": "user", "content": "Tell me a long story."}],
        options={"num_predict": 12, "temperature": 0},
    )
    assert longer.eval_count is not None and 4 < longer.eval_count <= 12

    # One engine: the preset is served by its base's.
    loaded = httpx.get(f"{server.base_url}/admin/models/loaded").json()["data"]
    assert [m["name"] for m in loaded] == [BASE]
    assert len(server.engine_pids()) == 1

    refused = httpx.request("DELETE", f"{server.base_url}/api/delete", json={"model": BASE})
    assert refused.status_code == 400 and "brief" in refused.json()["error"]

    client.delete("brief")
    assert "brief:latest" not in [m.model for m in client.list().models]
    assert not any((server.data_dir / "models" / "presets").iterdir())
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat("brief", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404


def test_create_replaces_a_preset_and_streams_by_default(server: HearthServer) -> None:
    first = create(server, model="again", **{"from": BASE}, system="one")
    assert first.status_code == 200
    assert first.text.strip().splitlines()[-1] == '{"status": "success"}'
    second = create(server, model="again", stream=False, **{"from": BASE}, system="two")
    assert second.json() == {"status": "success"}
    shown = httpx.post(f"{server.base_url}/api/show", json={"model": "again"}).json()
    assert shown["system"] == "two"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "../evil", "from": BASE}, 400, "model"),
        ({"model": "a b", "from": BASE}, 400, "model"),
        ({"model": "x" * 300, "from": BASE}, 400, "model"),
        ({"model": "p", "from": "no-such-model"}, 404, None),
        ({"model": "p"}, 400, "from"),
        ({"model": "p", "from": BASE, "parameters": {"temperature": "hot"}}, 400, "parameters"),
        ({"model": "p", "from": BASE, "parameters": {"num_ctx": 8192}}, 400, "parameters"),
        ({"model": "p", "from": BASE, "parameters": {"colour": 1}}, 400, "parameters"),
        ({"model": "p", "from": BASE, "parameters": "temperature 1"}, 400, "parameters"),
        ({"model": "p", "from": BASE, "system": 5}, 400, "system"),
        ({"model": "p", "from": BASE, "adapters": {"a.gguf": "sha256:00"}}, 400, "adapters"),
        ({"model": "p", "from": BASE, "files": {"m.gguf": "sha256:00"}}, 400, "files"),
        ({"model": "p", "modelfile": f"FROM {BASE}\nSYSTEM hi"}, 400, "modelfile"),
        ({"model": BASE, "from": BASE}, 400, "model"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    server: HearthServer, body: dict[str, Any], status: int, param: str | None
) -> None:
    answer = create(server, **body)
    assert answer.status_code == status, answer.text
    if param is not None:  # Ollama's error shape is {"error": message}
        assert f"'{param}" in answer.json()["error"]
    presets = server.data_dir / "models" / "presets"
    assert not presets.exists() or not any(p.name.startswith("p.") for p in presets.iterdir())
