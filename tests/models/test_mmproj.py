"""Vision projectors in the model store: chosen and pulled with a GGUF repository's model,
attached by `hearth import --mmproj`, recorded in the manifest, detected from their metadata
(models/projector.py) and shown by `hearth ls` and `hearth show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hearth.cli.main import cli
from hearth.errors import ModelStoreError
from hearth.models.hub_ref import HubFile
from hearth.models.projector import choose_projector, read_projector
from hearth.models.pull import pull
from hearth.models.store import ModelStore
from support.fake_hub import FakeHub, add_vision_repo
from support.gguf_files import write_gguf
from support.ports import free_port
from support.vision_files import TinyVLM, tiny_vlm

REPO = "tiny-org/tiny-vlm-GGUF"


@pytest.fixture(scope="session")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> TinyVLM:
    return tiny_vlm(tmp_path_factory)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def hub_files(**sizes: int) -> list[HubFile]:
    return [HubFile(name, size, None, None) for name, size in sizes.items()]


def named(*names: str, size: int = 10) -> list[HubFile]:
    return [HubFile(name, size, None, None) for name in names]


def test_the_projector_of_the_models_precision_is_chosen() -> None:
    files = named("m-Q8_0.gguf", "m-F16.gguf", "mmproj-F16.gguf", "mmproj-Q8_0.gguf")
    model = files[0]
    assert choose_projector(files, model, "Q8_0") == files[3]
    assert choose_projector(files, files[1], "F16") == files[2]


def test_f16_is_preferred_then_the_smallest() -> None:
    files = [
        HubFile("m-Q4_K_M.gguf", 5, None, None),
        HubFile("mmproj-model-f32.gguf", 400, None, None),
        HubFile("mmproj-model-f16.gguf", 200, None, None),
        HubFile("mmproj-BF16.gguf", 200, None, None),
    ]
    assert choose_projector(files, files[0], "Q4_K_M") == files[2]  # lower case names too
    without_f16 = [files[0], files[1], files[3]]
    assert choose_projector(without_f16, files[0], "Q4_K_M") == files[3]  # the smaller


def test_a_projector_beside_the_model_wins_and_none_is_none() -> None:
    files = named("a/m-Q4_K_M.gguf", "a/mmproj-F32.gguf", "b/mmproj-F16.gguf")
    assert choose_projector(files, files[0], "Q4_K_M") == files[1]
    assert (
        choose_projector(named("m-Q4_K_M.gguf", "README.md"), named("m-Q4_K_M.gguf")[0], None)
        is None
    )


def test_the_projector_says_it_gives_vision(vlm: TinyVLM) -> None:
    info = read_projector(vlm.mmproj)
    assert info.vision and not info.audio
    assert info.projector_type == "gemma3"
    assert info.quantization == "F16"
    assert info.capabilities == ("vision",)
    with pytest.raises(ModelStoreError, match="is not a multimodal projector"):
        read_projector(vlm.text)


def test_pull_fetches_the_projector_with_the_model(
    fake_hub: FakeHub, store: ModelStore, vlm: TinyVLM
) -> None:
    add_vision_repo(fake_hub, REPO, vlm.text, vlm.mmproj, ("F32", "F16", "BF16"))
    model = pull(REPO, store)
    assert model.name == f"{REPO}:F16"
    assert model.projector is not None and model.projector.name == "mmproj-F16.gguf"
    assert model.projector.read_bytes() == fake_hub.repos[REPO]["mmproj-F16.gguf"].data
    assert fake_hub.downloads_of("mmproj-F32.gguf") == 0
    assert fake_hub.downloads_of("mmproj-BF16.gguf") == 0
    # Recorded in the manifest, relative to the models folder, and read back.
    manifest = json.loads(next((store.models_dir / "manifests").glob("*.json")).read_text())
    assert manifest["projector"] == str(model.projector.relative_to(store.models_dir))
    assert store.get(model.name).projector == model.projector
    # Pulled again: nothing is downloaded.
    before = fake_hub.downloads_of("mmproj-F16.gguf")
    assert pull(REPO, store).projector == model.projector
    assert fake_hub.downloads_of("mmproj-F16.gguf") == before
    # Removed: the projector goes with the model.
    store.remove(model.name)
    assert not model.projector.exists()


def test_a_pull_made_before_projectors_gets_it_on_the_next_pull(
    fake_hub: FakeHub, store: ModelStore, vlm: TinyVLM
) -> None:
    add_vision_repo(fake_hub, REPO, vlm.text, vlm.mmproj, ("F16",))
    model = pull(REPO, store)
    manifest_path = next((store.models_dir / "manifests").glob("*.json"))
    manifest = json.loads(manifest_path.read_text())
    del manifest["projector"]  # as Hearth wrote it before projectors were recorded
    manifest_path.write_text(json.dumps(manifest))
    assert store.get(model.name).projector is None  # still loads
    assert pull(REPO, store).projector == model.projector
    assert fake_hub.downloads_of("tiny-vlm-F16.gguf") == 1  # the model was not fetched again


def test_a_text_repository_has_no_projector(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    fake_hub.add_file("o/text-GGUF", "text-Q4_K_M.gguf", write_gguf(tmp_path / "t.gguf"))
    model = pull("o/text-GGUF", store)
    assert model.projector is None
    assert "projector" not in json.loads(
        next((store.models_dir / "manifests").glob("*.json")).read_text()
    )


def test_import_attaches_a_projector(store: ModelStore, vlm: TinyVLM) -> None:
    model = store.import_file(vlm.text, name="seer", projector=vlm.mmproj)
    assert model.projector is not None and model.projector.parent == model.path.parent
    assert model.projector.read_bytes() == vlm.mmproj.read_bytes()
    assert store.get("seer").projector == model.projector
    referenced = store.import_file(vlm.text, name="seer-ref", copy=False, projector=vlm.mmproj)
    assert referenced.projector == vlm.mmproj.resolve()
    store.remove("seer")
    assert not model.projector.exists()
    store.remove("seer-ref")
    assert vlm.mmproj.is_file()  # a referenced projector is the user's


def test_import_refuses_a_projector_mistaken_for_a_model_and_the_reverse(
    store: ModelStore, vlm: TinyVLM
) -> None:
    with pytest.raises(ModelStoreError, match="is a multimodal projector, not a model"):
        store.import_file(vlm.mmproj)
    with pytest.raises(ModelStoreError, match="is not a multimodal projector"):
        store.import_file(vlm.text, name="x", projector=vlm.text)
    assert store.names() == ["gemma-3-270m"]  # nothing registered


def cli_run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], catch_exceptions=False)


def test_import_ls_and_show_through_the_cli(
    tmp_path: Path, vlm: TinyVLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_PORT", str(free_port()))  # no server answers
    monkeypatch.setenv("COLUMNS", "200")
    data = tmp_path / "data"
    imported = cli_run(data, "import", str(vlm.text), "--name", "seer", "--mmproj", str(vlm.mmproj))
    assert imported.exit_code == 0, imported.output
    assert "with its projector" in imported.output and "gemma3, F16, vision" in imported.output
    cli_run(data, "import", str(vlm.text), "--name", "blind")
    listing = cli_run(data, "ls").output
    rows = {line.split("│")[1].strip(): line for line in listing.splitlines() if "│" in line}
    assert "vision" in rows["seer"]
    assert "vision" not in rows["blind"]
    shown = cli_run(data, "show", "seer").output
    assert "projector" in shown and "mmproj-F16.gguf gemma3, F16, vision" in shown
    refused = cli_run(data, "import", str(vlm.text), "--name", "x", "--mmproj", str(vlm.text))
    assert refused.exit_code != 0 and "is not a multimodal projector" in refused.output
