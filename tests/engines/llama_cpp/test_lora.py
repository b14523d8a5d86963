"""LoRA adapters end to end: a real `hearth serve` with a tiny Llama and random adapters made in
the test, attached with `hearth adapter add` while it runs, asked for through the `openai`
client as `model+adapter` and with the `adapter` field; one llama-server serves them all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner, Result

from hearth.cli.main import cli
from support.hearth_server import HearthServer, StartHearth
from support.lora_files import TinyLora
from support.ports import free_port

PROMPT = "The quick brown fox"


def hearth(server: HearthServer, *args: str) -> Result:
    result = CliRunner().invoke(
        cli, [*args, "--data-dir", str(server.data_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result


def answer(server: HearthServer, model: str, **extra: Any) -> str:
    """Greedy and seeded: the same model and adapter always give the same text."""
    done = server.openai().completions.create(
        model=model, prompt=PROMPT, max_tokens=24, temperature=0, seed=7,
        extra_body={"ignore_eos": True, **extra},
    )  # fmt: skip
    assert done.model == model
    return done.choices[0].text


def refusal(server: HearthServer, body: dict[str, Any], path: str = "/v1/completions") -> Any:
    response = httpx.post(server.base_url + path, json=body, timeout=60)
    assert 400 <= response.status_code < 500, response.text
    return response.status_code, response.json()["error"]


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth,
    tiny_lora: TinyLora,
    tmp_path_factory: pytest.TempPathFactory,
) -> HearthServer:
    config = tmp_path_factory.mktemp("config") / "hearth.yaml"
    # A remote deployment that is never reached: adapter requests to it are refused first.
    config.write_text(
        "routing: {health_check_interval: 0}\n"
        f"deployments: {{far: {{url: 'http://127.0.0.1:{free_port()}/v1', model: x}}}}\n"
    )
    return start_hearth("--config", str(config))


@pytest.fixture(autouse=True)
def cli_finds_the_server(server: HearthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_PORT", str(server.port))
    monkeypatch.setenv("COLUMNS", "200")


def test_adapters_change_the_answer_and_leave_the_base_alone(
    server: HearthServer, tiny_lora: TinyLora
) -> None:
    hearth(server, "import", str(tiny_lora.base_gguf), "--name", "tiny")
    # A PEFT folder, converted on the way in; the running server reloads at once.
    added = hearth(server, "adapter", "add", "tiny", "one", str(tiny_lora.peft["one"]),
                   "--base", str(tiny_lora.base))  # fmt: skip
    assert "ask for it as the model 'tiny+one'" in added.output
    assert "has applied the change" in added.output
    listed = {m.id: m for m in server.openai().models.list()}
    assert {"tiny", "tiny+one"} <= set(listed)
    assert listed["tiny+one"].model_extra is not None
    assert listed["tiny+one"].model_extra["adapter"] == "one"

    base = answer(server, "tiny")
    with_one = answer(server, "tiny+one")
    assert with_one != base
    assert answer(server, "tiny") == base  # after an adapter request, on the same engine
    assert answer(server, "tiny", adapter="one") == with_one
    assert answer(server, "tiny", adapter={"name": "one", "scale": 1}) == with_one
    assert answer(server, "tiny", adapter={"name": "one", "scale": 0}) == base
    assert answer(server, "tiny", adapter={"name": "one", "scale": 0.5}) not in (base, with_one)
    assert answer(server, "tiny+one") == with_one
    engines = server.engine_pids()

    # A second adapter: the model's engine restarts with both; each keeps its own answer.
    hearth(server, "adapter", "add", "tiny", "two", str(tiny_lora.gguf["two"]))
    with_two = answer(server, "tiny+two")
    assert with_two not in (base, with_one)
    assert answer(server, "tiny+one") == with_one
    assert answer(server, "tiny") == base
    after = server.engine_pids()  # the tiny model's engine was replaced, no other
    assert len(set(engines) - set(after)) == 1 and len(after) == len(engines)
    tiny_engines = [line for line in _ps(server) if line.startswith("tiny")]
    assert len(tiny_engines) == 1, tiny_engines  # one engine, several names

    # Chat, streamed, and Ollama's listing.
    chunks = server.openai().chat.completions.create(
        model="tiny+two", messages=[{"role": "user", "content": "Hello"}],
        max_tokens=4, temperature=0, stream=True,
    )  # fmt: skip
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed
    tags = httpx.get(server.base_url + "/api/tags", timeout=30).json()["models"]
    assert {"tiny+one:latest", "tiny+two:latest"} <= {m["name"] for m in tags}

    # A preset with an adapter answers as the adapter does.
    hearth(server, "create", "tiny-one", "--from", "tiny", "--adapter", "one")
    assert answer(server, "tiny-one") == with_one

    shown = hearth(server, "show", "tiny").output
    assert "ask for tiny+one" in shown and "ask for tiny+two" in shown
    hearth(server, "rm", "tiny-one")
    removed = hearth(server, "adapter", "rm", "tiny", "two")
    assert "has applied the change" in removed.output
    assert "tiny+two" not in {m.id for m in server.openai().models.list()}
    assert answer(server, "tiny+one") == with_one


def _ps(server: HearthServer) -> list[str]:
    models = httpx.get(server.base_url + "/api/ps", timeout=30).json()["models"]
    return [m["name"] for m in models]


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"model": "tiny", "adapter": "nope"}, 400, "its adapters: one"),
        ({"model": "tiny+nope"}, 404, "Available models: tiny+one"),
        ({"model": "tiny", "adapter": {"name": "one", "scale": 5}}, 400, "adapter.scale"),
        ({"model": "tiny", "adapter": {"name": "one", "scale": -1}}, 400, "adapter.scale"),
        ({"model": "tiny", "adapter": {"name": "one", "extra": 1}}, 400, "adapter.extra"),
        ({"model": "tiny", "adapter": 3}, 400, "adapter"),
        ({"model": "tiny", "adapter": "x" * 65}, 400, "adapter"),
        ({"model": "tiny+one", "adapter": "two"}, 400, "uses the adapter 'one'"),
        ({"model": "gemma-3-270m", "adapter": "one"}, 400, "'gemma-3-270m' has no adapters"),
        ({"model": "far", "adapter": "one"}, 400, "the remote deployment 'far'"),
    ],
)
def test_bad_adapter_requests_are_refused(
    server: HearthServer, tiny_lora: TinyLora, body: dict[str, Any], status: int, named: str
) -> None:
    if "tiny+one" not in {m.id for m in server.openai().models.list()}:
        test_adapters_change_the_answer_and_leave_the_base_alone(server, tiny_lora)
    code, error = refusal(server, {"prompt": PROMPT, "max_tokens": 2, **body})
    assert code == status
    assert named in error["message"]


def test_an_adapter_is_not_for_embeddings(server: HearthServer) -> None:
    code, error = refusal(server, {"model": "tiny+one", "input": "hello"}, path="/v1/embeddings")
    assert code == 400
    assert "apply to chat and completions, not to embeddings" in error["message"]


def test_the_openai_client_sees_a_clean_error(server: HearthServer) -> None:
    with pytest.raises(openai.BadRequestError, match="its adapters: one"):
        server.openai().chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}],
            extra_body={"adapter": "missing"},
        )  # fmt: skip


def test_config_adapters_are_loaded_too(
    start_hearth: StartHearth, tiny_lora: TinyLora, tmp_path: Path
) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text(
        f"models:\n  cfg:\n    model: {tiny_lora.base_gguf}\n"
        f"    adapters: {{one: {tiny_lora.gguf['one']}, two: {tiny_lora.gguf['two']}}}\n"
    )
    server = start_hearth("--config", str(config))
    names = {m.id for m in server.openai().models.list()}
    assert {"cfg", "cfg+one", "cfg+two"} <= names
    base, one, two = (answer(server, name) for name in ("cfg", "cfg+one", "cfg+two"))
    assert len({base, one, two}) == 3
