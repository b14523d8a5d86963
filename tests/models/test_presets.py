"""Presets (models/presets.py): stored beside the model store, parameters checked like request
fields, applied to requests by the pipeline; and through a real `hearth serve` whose base is a
scripted upstream that records what it received."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hearth.errors import ModelStoreError
from hearth.models.presets import Preset, PresetStore, check_parameters, parse_parameter
from hearth.models.store import ModelStore
from support.hearth_server import StartHearth
from support.scripted_upstream import ScriptedUpstream


@pytest.fixture
def presets(tmp_path: Path) -> PresetStore:
    return PresetStore(tmp_path / "models")


def test_create_list_get_remove(presets: PresetStore) -> None:
    made = presets.create(
        Preset("pirate", "gemma-3-270m", "Talk like a pirate.", {"temperature": 0.2}),
        base_known=True,
    )
    assert made.added is not None
    assert [p.name for p in presets.list()] == ["pirate"]
    got = presets.get("pirate")
    assert got is not None and got.system == "Talk like a pirate." and got.base == "gemma-3-270m"
    assert got.parameters == {"temperature": 0.2}
    assert presets.users_of("gemma-3-270m") == ["pirate"]
    assert presets.remove("pirate").name == "pirate"
    assert presets.list() == [] and "pirate" not in presets


def test_files_stay_in_the_presets_folder(presets: PresetStore) -> None:
    presets.create(Preset("owner/name:tag", "gemma-3-270m"), base_known=True)
    [file] = presets.folder.iterdir()
    assert file.parent == presets.folder and "/" not in file.name
    assert presets.get("owner/name:tag") is not None


@pytest.mark.parametrize("name", ["../evil", "a/b/c", "bad name", "", "x" * 201, "/abs", "a\\b"])
def test_bad_names_are_refused(presets: PresetStore, name: str) -> None:
    with pytest.raises(ModelStoreError):
        presets.create(Preset(name, "gemma-3-270m"), base_known=True)
    assert not presets.folder.exists()


def test_names_are_shared_with_the_model_store(presets: PresetStore) -> None:
    with pytest.raises(ModelStoreError, match="model in the store"):
        presets.create(Preset("gemma-3-270m", "gemma-3-270m"), base_known=True)
    presets.create(Preset("pirate", "gemma-3-270m"), base_known=True)
    with pytest.raises(ModelStoreError, match="preset named 'pirate'"):
        ModelStore(presets.models.models_dir).check_name_free("pirate")


def test_unknown_base_duplicate_and_preset_of_preset(presets: PresetStore) -> None:
    with pytest.raises(ModelStoreError, match="no model named 'nope'"):
        presets.create(Preset("p", "nope"), base_known=False)
    presets.create(Preset("p", "gemma-3-270m"), base_known=True)
    with pytest.raises(ModelStoreError, match="already exists"):
        presets.create(Preset("p", "gemma-3-270m"), base_known=True)
    presets.create(Preset("p", "gemma-3-270m", "new"), base_known=True, replace=True)
    with pytest.raises(ModelStoreError, match="itself a preset"):
        presets.create(Preset("q", "p"), base_known=True)


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        ({"temperature": "hot"}, "parameters.temperature"),
        ({"temperature": 3}, "parameters.temperature"),
        ({"top_p": -1}, "parameters.top_p"),
        ({"num_predict": 0}, "parameters.num_predict"),
        ({"num_predict": "many"}, "parameters.num_predict"),
        ({"num_ctx": 4096}, "engine setting"),
        ({"favourite_colour": "blue"}, "not a parameter"),
        ({"stop": 5}, "parameters.stop"),
    ],
)
def test_bad_parameters_are_refused(parameters: dict[str, object], problem: str) -> None:
    with pytest.raises(ModelStoreError, match=problem):
        check_parameters(parameters)


def test_parse_parameter() -> None:
    assert parse_parameter("temperature=0.2") == ("temperature", 0.2)
    assert parse_parameter("stop=END") == ("stop", "END")
    assert parse_parameter('stop=["a", "b"]') == ("stop", ["a", "b"])
    with pytest.raises(ModelStoreError, match="NAME=VALUE"):
        parse_parameter("temperature")


def test_apply_adds_system_and_defaults_the_request_left_out() -> None:
    preset = Preset("p", "b", "Be brief.", {"temperature": 0.1, "num_predict": 7, "seed": 3})
    fields = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "seed": 9}
    applied = preset.apply(fields, "chat")
    assert applied["messages"][0] == {"role": "system", "content": "Be brief."}
    assert applied["temperature"] == 0.1 and applied["max_tokens"] == 7
    assert applied["seed"] == 9  # the request's own value wins
    assert fields["messages"] == [{"role": "user", "content": "hi"}]  # not changed in place
    own = {"messages": [{"role": "system", "content": "mine"}, {"role": "user", "content": "x"}]}
    assert preset.apply(own, "chat")["messages"] == own["messages"]
    assert preset.apply({"max_completion_tokens": 5}, "chat").get("max_tokens") is None
    assert preset.apply({"input": "x"}, "embeddings") == {"input": "x"}


def test_served_through_the_base_with_system_and_defaults(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    """The base is a remote scripted upstream: what it receives proves the preset's system
    message and defaults reach the model, and that the request's own values win."""
    config = tmp_path / "hearth.yaml"
    config.write_text(f"deployments:\n  echo: {{url: '{upstream.url('presets')}'}}\n")
    server = start_hearth("--config", str(config))
    PresetStore(server.data_dir / "models").create(
        Preset("terse", "echo", "Answer in one word.", {"temperature": 0.3, "stop": ["END"]}),
        base_known=True,
    )
    assert httpx.post(f"{server.base_url}/admin/reload", timeout=30).status_code == 200
    client = server.openai()
    assert "terse" in [m.id for m in client.models.list()]

    answer = client.chat.completions.create(
        model="terse", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content == "presets says hi"
    sent = upstream.received["presets"][-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Answer in one word."}
    assert sent["temperature"] == 0.3 and sent["stop"] == ["END"]

    client.chat.completions.create(
        model="terse",
        messages=[{"role": "system", "content": "mine"}, {"role": "user", "content": "hello"}],
        temperature=1.5,
    )
    sent = upstream.received["presets"][-1].body
    assert [m["content"] for m in sent["messages"]] == ["mine", "hello"]
    assert sent["temperature"] == 1.5

    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    sent = upstream.received["presets"][-1].body
    assert sent["messages"] == [{"role": "user", "content": "hi"}]  # the base is untouched
    assert "temperature" not in sent
