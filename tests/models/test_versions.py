"""Revisions of pulled models against the loopback fake hub: recorded on pull, updated beside
the old one (resumable, checksummed), addressable as NAME@REV, rolled back, kept up to a count,
removed one by one; manifests from before revisions still load and update."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from hearth.config import ModelSettings, RouteSettings, RouteTarget, Settings
from hearth.deployments.build import build_catalogue
from hearth.errors import ChecksumMismatch, HubUnreachable, ModelNotFound, ModelStoreError
from hearth.models import pull as pull_module
from hearth.models.pull import HubSettings, pull
from hearth.models.store import ModelStore
from hearth.models.versions import check, rollback, update
from support.fake_hub import COMMIT, FakeHub
from support.gguf_files import write_gguf
from support.ports import free_port

REPO = "acme/tiny-GGUF"
FILE = "tiny-Q4_K_M.gguf"
NAME = f"{REPO}:Q4_K_M"


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull_module, "RETRY_DELAY", 0.0)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "data" / "models")


def tiny(tmp_path: Path, label: str, vocab: int = 100) -> bytes:
    """A small GGUF whose bytes differ per label (its name in the metadata)."""
    return write_gguf(tmp_path / "src" / f"{label}.gguf", extra={"test.label": label},
                      vocab=vocab).read_bytes()  # fmt: skip


@pytest.fixture
def pulled(fake_hub: FakeHub, store: ModelStore, tmp_path: Path) -> bytes:
    data = tiny(tmp_path, "first")
    fake_hub.add_file(REPO, FILE, data)
    pull(REPO, store)
    return data


def test_a_pull_records_its_revision_in_a_folder_of_its_own(
    pulled: bytes, store: ModelStore
) -> None:
    model = store.get(NAME)
    assert (model.revision, model.repo, model.older) == (COMMIT, REPO, ())
    assert model.path == store.models_dir / "hub" / REPO / COMMIT / FILE
    manifest = json.loads(next((store.models_dir / "manifests").glob("*.json")).read_text())
    assert (manifest["revision"], manifest["repo"]) == (COMMIT, REPO)


def test_an_update_downloads_beside_the_old_revision_and_keeps_it_addressable(
    pulled: bytes, fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    new_data = tiny(tmp_path, "second")
    commit = fake_hub.new_revision(REPO, {FILE: new_data})
    result = update(store, NAME)
    assert result.replaced == COMMIT
    model = store.get(NAME)
    assert model.revision == commit and model.path.read_bytes() == new_data
    assert model.path == store.models_dir / "hub" / REPO / commit / FILE
    assert [r.revision for r in model.older] == [COMMIT]

    old = f"{NAME}@{COMMIT[:7]}"
    assert old in store.names()  # listed as a model of its own
    for given in (COMMIT[:7], COMMIT[:10], COMMIT[:12], COMMIT, COMMIT[:12].upper()):
        found = store.get(f"{NAME}@{given}")
        assert found.name == old and found.path.read_bytes() == pulled
    assert store.get(f"{NAME}@{commit[:9]}").path == model.path  # the current one, by commit

    again = update(store, NAME)  # up to date: nothing fetched, nothing changed
    assert again.replaced is None and fake_hub.downloads_of(FILE) == 2


def test_bad_revision_names_are_refused_naming_the_revisions(
    pulled: bytes, store: ModelStore
) -> None:
    with pytest.raises(ModelStoreError, match=rf"no revision fffffff.*{NAME}@{COMMIT[:7]}"):
        store.get(f"{NAME}@fffffff")
    for bad in (f"{NAME}@abc", f"{NAME}@main", f"{NAME}@{'g' * 7}", "nothing@0123456"):
        assert bad not in store
        with pytest.raises(ModelNotFound):
            store.get(bad)


def test_an_interrupted_update_resumes_and_a_corrupt_one_changes_nothing(
    pulled: bytes, fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    new_data = tiny(tmp_path, "second", vocab=4000)
    commit = fake_hub.new_revision(REPO, {FILE: new_data})
    fake_hub.corrupt.add(FILE)
    with pytest.raises(ChecksumMismatch):
        update(store, NAME)
    assert store.get(NAME).revision == COMMIT  # still the old one
    assert not (store.models_dir / "hub" / REPO / commit).exists()
    fake_hub.corrupt.clear()

    fake_hub.cut_after[FILE] = 3000
    fake_hub.cuts[FILE] = pull_module.ATTEMPTS
    with pytest.raises(HubUnreachable, match="again resumes"):
        update(store, NAME)
    assert store.get(NAME).revision == COMMIT
    partial = store.models_dir / "hub" / REPO / commit / f"{FILE}.partial"
    assert partial.stat().st_size == 3000 * pull_module.ATTEMPTS

    assert update(store, NAME).model.path.read_bytes() == new_data
    assert fake_hub.ranges_for(FILE)[-1] == f"bytes={3000 * pull_module.ATTEMPTS}-"


def test_rollback_returns_to_the_previous_revision_and_back(
    pulled: bytes, fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    commit = fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    update(store, NAME)
    back = rollback(store, NAME)
    assert back.revision == COMMIT and back.path.read_bytes() == pulled
    assert store.get(NAME).revision == COMMIT
    assert [r.revision for r in back.older] == [commit]
    assert rollback(store, NAME).revision == commit  # the one it left is kept: forward again
    assert rollback(store, NAME, to=COMMIT[:8]).revision == COMMIT
    with pytest.raises(ModelStoreError, match="already serves"):
        rollback(store, NAME, to=COMMIT[:7])
    with pytest.raises(ModelStoreError, match="not one of its revisions"):
        rollback(store, f"{NAME}@{commit[:7]}")
    # Pulling the hub's revision again takes the kept files: nothing is downloaded.
    downloads = fake_hub.downloads_of(FILE)
    assert update(store, NAME).model.revision == commit
    assert fake_hub.downloads_of(FILE) == downloads


def test_no_earlier_revision_no_rollback(pulled: bytes, store: ModelStore) -> None:
    with pytest.raises(ModelStoreError, match="no earlier revision kept"):
        rollback(store, NAME)


def test_old_revisions_past_the_count_are_deleted(
    pulled: bytes, fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    first = store.get(NAME).path
    commits = [fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})]
    update(store, NAME, keep=1)
    commits.append(fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "third")}))
    model = update(store, NAME, keep=1).model
    assert [r.revision for r in model.older] == [commits[0]]
    assert not first.exists() and not (store.models_dir / "hub" / REPO / COMMIT).exists()
    assert f"{NAME}@{COMMIT[:7]}" not in store
    assert store.get(f"{NAME}@{commits[0][:7]}").path.is_file()
    # keep=0: the replaced revision goes at once.
    fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "fourth")})
    assert update(store, NAME, keep=0).model.older == ()
    assert sorted(p.name for p in (store.models_dir / "hub" / REPO).iterdir()) == [
        store.get(NAME).revision
    ]


def test_removing_one_revision_or_all(
    pulled: bytes, fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    commit = fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    update(store, NAME)
    old_file = store.get(f"{NAME}@{COMMIT[:7]}").path
    with pytest.raises(ModelStoreError, match=rf"serves now.*hearth rollback {NAME}"):
        store.remove(f"{NAME}@{commit[:7]}")
    removed = store.remove(f"{NAME}@{COMMIT[:12]}")
    assert removed.name == f"{NAME}@{COMMIT[:7]}"
    assert not old_file.exists() and store.get(NAME).older == ()
    assert store.get(NAME).path.is_file()

    fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "third")})
    update(store, NAME)
    store.remove(NAME)
    assert NAME not in store and not (store.models_dir / "hub").exists()


def test_a_manifest_from_before_revisions_loads_and_updates(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    data = tiny(tmp_path, "first")
    fake_hub.add_file(REPO, FILE, data)
    old_file = store.models_dir / "hub" / REPO / FILE  # the layout without revision folders
    old_file.parent.mkdir(parents=True)
    old_file.write_bytes(data)
    manifests = store.models_dir / "manifests"
    manifests.mkdir(parents=True)
    (manifests / f"{quote(NAME, safe='')}.json").write_text(
        json.dumps(
            {
                "name": NAME,
                "kind": "pulled",
                "source": f"{REPO}/{FILE} (Hugging Face Hub, {COMMIT})",
                "files": [f"hub/{REPO}/{FILE}"],
                "copied": True,
                "size": len(data),
                "added": "2026-01-01T00:00:00+00:00",
                "sha256": [],
            }
        )
    )
    model = store.get(NAME)
    assert (model.revision, model.repo, model.path) == (COMMIT, REPO, old_file)
    assert pull(REPO, store).path == old_file  # the same revision: nothing downloaded
    assert fake_hub.downloads_of(FILE) == 0

    commit = fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    assert [f.revision for f in check(store)] == [COMMIT] and check(store)[0].outdated
    assert update(store, NAME).model.revision == commit
    assert store.get(f"{NAME}@{COMMIT[:7]}").path == old_file and old_file.is_file()


def test_outdated_asks_the_hub_once_per_repository_and_says_what_failed(
    pulled: bytes, fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    other = "acme/other-GGUF"
    fake_hub.add_file(other, "other-Q8_0.gguf", tiny(tmp_path, "other"))
    pull(other, store)
    pull(f"{REPO}/{FILE}", store, name="mine")
    assert not any(f.outdated for f in check(store))

    commit = fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    fake_hub.failing_repos[other] = 503
    asked = len([s for s in fake_hub.requests if s.path == f"/api/models/{REPO}"])
    found = {f.name: f for f in check(store)}
    assert set(found) == {NAME, "mine", f"{other}:Q8_0"}
    assert found[NAME].outdated and found[NAME].upstream == commit
    assert found["mine"].outdated
    assert not found[f"{other}:Q8_0"].outdated
    assert "failed to list acme/other-GGUF (503)" in (found[f"{other}:Q8_0"].problem or "")
    infos = [s for s in fake_hub.requests if s.path == f"/api/models/{REPO}"]
    assert len(infos) == asked + 1  # once for both of its models

    nowhere = HubSettings(f"http://127.0.0.1:{free_port()}", None, offline=False)
    assert all("cannot reach" in (f.problem or "") for f in check(store, nowhere))
    offline = HubSettings(fake_hub.endpoint, None, offline=True)
    assert all("offline mode" in (f.problem or "") for f in check(store, offline))


def test_revisions_in_the_catalogue_settings_and_routes(
    pulled: bytes, fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    commit = fake_hub.new_revision(REPO, {FILE: tiny(tmp_path, "second")})
    update(store, NAME)
    old, new = f"{NAME}@{COMMIT[:7]}", f"{NAME}@{commit[:7]}"
    settings = Settings(
        data_dir=store.models_dir.parent,
        models={"pinned": ModelSettings(model=f"{NAME}@{COMMIT[:10]}")},
        routes={
            "ab": RouteSettings(
                strategy="weighted",
                deployments=[
                    RouteTarget(deployment=f"{NAME}@{commit[:12]}", weight=1),
                    RouteTarget(deployment=f"{NAME}@{COMMIT[:9]}", weight=1),
                ],
            )
        },
    )
    catalogue = build_catalogue(settings, None, tmp_path / "bundled.gguf")
    names = catalogue.names()
    assert {NAME, old, new, "pinned", "ab"} <= set(names)
    assert catalogue.resolve(f"{NAME}@{commit}").local is catalogue.get(NAME)  # the current
    assert catalogue.resolve(f"{NAME}@{COMMIT[:11]}").local is catalogue.get(old)
    assert [t.deployment.name for t in catalogue.resolve("ab").targets] == [NAME, old]

    def file_of(name: str) -> Path:
        deployment = catalogue.get(name)
        assert deployment is not None
        path: Path = deployment.launcher.model_path  # type: ignore[attr-defined]
        return path

    assert file_of(old) == file_of("pinned") == store.get(old).path
    assert file_of(NAME) == store.get(NAME).path != file_of(old)
    with pytest.raises(ModelNotFound):
        catalogue.resolve(f"{NAME}@fffffff")
