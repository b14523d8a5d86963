"""The model store: the bundled model, imports (copy or reference), names, manifests, removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hearth.errors import ModelNotFound, ModelStoreError
from hearth.models.bundled import BUNDLED_MODEL_NAME
from hearth.models.store import MAX_NAME_LENGTH, ModelStore, inside, name_from_file, validate_name
from support.gguf_files import write_gguf


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "data" / "models")


def test_the_bundled_model_is_listed_before_it_is_assembled(store: ModelStore) -> None:
    [bundled] = store.list()
    assert bundled.name == BUNDLED_MODEL_NAME and bundled.kind == "bundled"
    assert not bundled.available and bundled.size is None
    assert store.get(BUNDLED_MODEL_NAME) == bundled


def test_the_bundled_model_once_assembled(bundled_model_dir: Path) -> None:
    bundled = ModelStore(bundled_model_dir).get(BUNDLED_MODEL_NAME)
    assert bundled.available and (bundled.size or 0) > 200_000_000


def test_import_copies_the_file(store: ModelStore, tmp_path: Path) -> None:
    original = write_gguf(tmp_path / "downloads" / "tiny-llama.Q8_0.gguf")
    model = store.import_file(original)
    assert model.name == "tiny-llama.Q8_0"
    assert model.copied and model.kind == "imported"
    assert model.path.is_relative_to(store.models_dir)
    assert model.path.read_bytes() == original.read_bytes()
    original.unlink()  # the copy does not depend on the original
    again = store.get("tiny-llama.Q8_0")
    assert again.available and again.size == model.size and again.path == model.path
    assert [m.name for m in store.list()] == [BUNDLED_MODEL_NAME, "tiny-llama.Q8_0"]


def test_import_by_reference_leaves_the_file_in_place(store: ModelStore, tmp_path: Path) -> None:
    original = write_gguf(tmp_path / "elsewhere" / "m.gguf")
    model = store.import_file(original, name="mine", copy=False)
    assert not model.copied and model.path == original.resolve()
    assert not (store.models_dir / "imported").exists()
    store.remove("mine")
    assert original.is_file()  # a referenced file is never deleted
    assert "mine" not in store


def test_remove_deletes_a_copy_and_its_folder(store: ModelStore, tmp_path: Path) -> None:
    model = store.import_file(write_gguf(tmp_path / "m.gguf"), name="team/model:v1")
    assert model.path.is_file()
    store.remove("team/model:v1")
    assert not model.path.exists() and not model.path.parent.exists()
    with pytest.raises(ModelNotFound):
        store.get("team/model:v1")


def test_manifests_are_json_and_survive_a_new_store(store: ModelStore, tmp_path: Path) -> None:
    store.import_file(write_gguf(tmp_path / "m.gguf"), name="owner/repo:Q4_K_M")
    [manifest] = (store.models_dir / "manifests").iterdir()
    data = json.loads(manifest.read_text())
    assert data["name"] == "owner/repo:Q4_K_M" and data["copied"] is True
    assert not Path(data["files"][0]).is_absolute()  # the data folder can move
    assert ModelStore(store.models_dir).get("owner/repo:Q4_K_M").available


def test_a_corrupt_manifest_says_how_to_recover(store: ModelStore, tmp_path: Path) -> None:
    store.import_file(write_gguf(tmp_path / "m.gguf"), name="m")
    [manifest] = (store.models_dir / "manifests").iterdir()
    manifest.write_text("{not json")
    with pytest.raises(ModelStoreError, match="delete it and pull or import"):
        store.list()


def test_a_split_model_is_imported_whole(store: ModelStore, tmp_path: Path) -> None:
    for i in (1, 2, 3):
        write_gguf(tmp_path / f"big-{i:05d}-of-00003.gguf", extra={"split.count": 3})
    model = store.import_file(tmp_path / "big-00001-of-00003.gguf")
    assert model.name == "big"
    assert [f.name for f in model.files] == [f"big-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    assert all(f.is_file() for f in model.files)
    with pytest.raises(ModelStoreError, match="not the first part"):
        store.import_file(tmp_path / "big-00002-of-00003.gguf", name="other")
    (tmp_path / "big-00003-of-00003.gguf").unlink()
    with pytest.raises(ModelStoreError, match=r"big-00003-of-00003.gguf is missing"):
        store.import_file(tmp_path / "big-00001-of-00003.gguf", name="other")


def test_only_gguf_files_are_imported(store: ModelStore, tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelStoreError, match="not a GGUF file"):
        store.import_file(bad)
    with pytest.raises(ModelStoreError, match="does not exist"):
        store.import_file(tmp_path / "nope.gguf")


def test_a_name_is_taken_once(store: ModelStore, tmp_path: Path) -> None:
    store.import_file(write_gguf(tmp_path / "m.gguf"), name="m")
    with pytest.raises(ModelStoreError, match=r"already exists.*--name.*hearth rm m"):
        store.import_file(tmp_path / "m.gguf", name="m")
    with pytest.raises(ModelStoreError, match="bundled model's name"):
        store.import_file(tmp_path / "m.gguf", name=BUNDLED_MODEL_NAME)


@pytest.mark.parametrize(
    "name", ["llama", "qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "a:b", "o/r"]
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "has space", "../escape", "a/b/c", "/abs", "a:b:c", "a:b/c", ".hidden"]
)
def test_invalid_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(ModelStoreError, match="letters, digits"):
        validate_name(name)


def test_over_long_names_name_the_limit(store: ModelStore) -> None:
    with pytest.raises(
        ModelStoreError, match=f"at most {MAX_NAME_LENGTH} characters; this one has"
    ):
        validate_name("x" * (MAX_NAME_LENGTH + 1))
    # Looking one up is no file system error (a 300-character manifest name is too long).
    long = "x" * 300
    assert long not in store
    with pytest.raises(ModelNotFound):
        store.get(long)


def test_default_names_come_from_the_file_stem() -> None:
    assert name_from_file(Path("Llama 3 (8B) Q4.gguf")) == "Llama-3-8B-Q4"
    assert name_from_file(Path("big-00001-of-00002.gguf")) == "big"


def test_a_missing_model_names_the_available_ones(store: ModelStore, tmp_path: Path) -> None:
    store.import_file(write_gguf(tmp_path / "m.gguf"), name="tiny")
    with pytest.raises(ModelNotFound, match=f"Available models: {BUNDLED_MODEL_NAME}, tiny"):
        store.get("nope")
    with pytest.raises(ModelNotFound):
        store.get("has space")


def test_the_bundled_model_cannot_be_removed(store: ModelStore) -> None:
    with pytest.raises(ModelStoreError, match="part of Hearth"):
        store.remove(BUNDLED_MODEL_NAME)


def test_a_referenced_file_that_moved_is_listed_as_unavailable(
    store: ModelStore, tmp_path: Path
) -> None:
    original = write_gguf(tmp_path / "m.gguf")
    store.import_file(original, name="moved", copy=False)
    original.unlink()
    assert not store.get("moved").available


def test_no_temporary_files_are_left(store: ModelStore, tmp_path: Path) -> None:
    store.import_file(write_gguf(tmp_path / "m.gguf"), name="m")
    leftovers = [p for p in store.models_dir.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def plant(store: ModelStore, name: str, files: list[str]) -> None:
    store.manifests_dir.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "kind": "pulled", "source": "planted", "files": files, "copied": True}
    (store.manifests_dir / f"{name}.json").write_text(json.dumps(data))


def test_remove_never_deletes_outside_the_models_folder(store: ModelStore, tmp_path: Path) -> None:
    victim = write_gguf(tmp_path / "outside" / "victim.gguf")
    marker = victim.with_name("victim.gguf.sha256")
    marker.write_text("x\n")
    plant(store, "climbs", ["../../outside/victim.gguf"])
    plant(store, "absolute", [str(victim)])
    linked = store.models_dir / "hub" / "linked"
    linked.parent.mkdir(parents=True)
    linked.symlink_to(victim.parent, target_is_directory=True)
    plant(store, "linked", ["hub/linked/victim.gguf"])
    for name in ("climbs", "absolute", "linked"):
        store.remove(name)
        assert victim.is_file() and marker.is_file(), name
        assert name not in store
    assert linked.is_symlink()


def test_inside_follows_links_and_dots(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "a").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    assert inside(root / "a" / "x.gguf", root)
    assert inside(root / "a" / ".." / "x.gguf", root)
    assert not inside(root / "a" / ".." / ".." / "x.gguf", root)
    assert not inside(root / "link" / "x.gguf", root)
    assert not inside(Path("/tmp/x.gguf"), root)
