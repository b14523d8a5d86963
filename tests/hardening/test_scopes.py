"""A key limited to some models acts and sees within them on every path: generation, token
counting, Ollama's load and unload, listings, show, ps, and the names an "unknown model" error
offers (each used to leak or act beyond the key's scope)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from support.access import ADMIN_KEY, create_key
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

LOCAL = "gemma-3-270m"


@pytest.fixture(scope="module")
def scoped(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[HearthServer, dict[str, str], dict[str, str]]]:
    folder = tmp_path_factory.mktemp("scopes")
    db_url = f"sqlite:///{folder / 'keys.db'}"
    config = folder / "hearth.yaml"
    config.write_text(
        f"preload: []\ndatabase_url: '{db_url}'\n"
        "auth: {admin_key: env:TEST_ADMIN_KEY, refresh_interval: 0.5}\n"
        "usage: {flush_interval: 0.2}\nrouting: {health_check_interval: 0}\n"
        f"deployments:\n  cloud: {{url: '{upstream.url('cloud')}'}}\n"
    )
    _, key = create_key(db_url, "cloud-only", models=["cloud"])
    server = start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})
    yield server, {"authorization": f"Bearer {key}"}, {"authorization": f"Bearer {ADMIN_KEY}"}


def _loaded(server: HearthServer, admin: dict[str, str]) -> list[str]:
    answer = httpx.get(f"{server.base_url}/admin/models/loaded", headers=admin, timeout=10)
    return [model["name"] for model in answer.json()["data"]]


def test_the_unknown_model_error_offers_only_the_keys_models(scoped: tuple) -> None:
    server, key, _ = scoped
    for path, body in (
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        ("/api/chat", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        ("/v1/messages", {"model": "nope", "max_tokens": 4,
                          "messages": [{"role": "user", "content": "x"}]}),
    ):  # fmt: skip
        answer = httpx.post(f"{server.base_url}{path}", json=body, headers=key, timeout=30)
        assert answer.status_code == 404, (path, answer.text)
        assert "cloud" in answer.text and LOCAL not in answer.text, (path, answer.text)
    answer = httpx.get(f"{server.base_url}/v1/models/{LOCAL}", headers=key, timeout=10)
    assert (
        answer.status_code == 404
        and LOCAL not in answer.json()["error"]["message"].split("Available")[1]
    )


def test_listing_shows_only_the_keys_models(scoped: tuple) -> None:
    server, key, _ = scoped
    models = httpx.get(f"{server.base_url}/v1/models", headers=key, timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["cloud"]


def test_token_counting_on_another_model_is_refused_and_loads_nothing(scoped: tuple) -> None:
    server, key, admin = scoped
    body = {"model": LOCAL, "messages": [{"role": "user", "content": "How many tokens?"}]}
    answer = httpx.post(
        f"{server.base_url}/v1/messages/count_tokens", json=body, headers=key, timeout=60
    )
    assert answer.status_code in (403, 404), answer.text
    assert LOCAL not in _loaded(server, admin)


def test_ollama_load_and_unload_of_another_model_are_refused(scoped: tuple) -> None:
    server, key, admin = scoped
    for path, body in (
        ("/api/generate", {"model": LOCAL}),
        ("/api/chat", {"model": LOCAL, "messages": []}),
        ("/api/generate", {"model": LOCAL, "keep_alive": -1}),
    ):
        answer = httpx.post(f"{server.base_url}{path}", json=body, headers=key, timeout=60)
        assert answer.status_code in (403, 404), (path, answer.text)
    assert LOCAL not in _loaded(server, admin)
    # The admin may: the same request loads it, and keep_alive 0 unloads it.
    answer = httpx.post(f"{server.base_url}/api/generate", json={"model": LOCAL}, headers=admin,
                        timeout=180)  # fmt: skip
    assert answer.json()["done_reason"] == "load"
    assert LOCAL in _loaded(server, admin)
    answer = httpx.post(
        f"{server.base_url}/api/generate",
        json={"model": LOCAL, "keep_alive": 0},
        headers=admin,
        timeout=60,
    )
    assert answer.json()["done_reason"] == "unload"
    assert LOCAL not in _loaded(server, admin)


def test_ollama_listings_and_show_stay_within_the_keys_models(scoped: tuple) -> None:
    server, key, admin = scoped
    httpx.post(f"{server.base_url}/api/generate", json={"model": LOCAL, "keep_alive": -1},
               headers=admin, timeout=180)  # fmt: skip
    try:
        tags = httpx.get(f"{server.base_url}/api/tags", headers=key, timeout=30).json()
        assert [m["name"] for m in tags["models"]] == ["cloud:latest"]
        everything = httpx.get(f"{server.base_url}/api/tags", headers=admin, timeout=30).json()
        assert f"{LOCAL}:latest" in [m["name"] for m in everything["models"]]
        ps = httpx.get(f"{server.base_url}/api/ps", headers=key, timeout=30).json()
        assert ps["models"] == []  # the local model is loaded, but not the key's to know of
        admin_ps = httpx.get(f"{server.base_url}/api/ps", headers=admin, timeout=30).json()
        assert [m["name"] for m in admin_ps["models"]] == [f"{LOCAL}:latest"]
        shown = httpx.post(f"{server.base_url}/api/show", json={"model": LOCAL}, headers=key,
                           timeout=30)  # fmt: skip
        assert shown.status_code == 404, shown.text
        assert LOCAL not in shown.text.split("Available")[-1]
        own = httpx.post(f"{server.base_url}/api/show", json={"model": "cloud"}, headers=key,
                         timeout=30)  # fmt: skip
        assert own.status_code == 200, own.text
        admin_show = httpx.post(f"{server.base_url}/api/show", json={"model": LOCAL},
                                headers=admin, timeout=30).json()  # fmt: skip
        assert ".gguf" in admin_show["modelfile"]  # the operator sees the file it serves
    finally:
        httpx.post(f"{server.base_url}/api/generate", json={"model": LOCAL, "keep_alive": 0},
                   headers=admin, timeout=60)  # fmt: skip
