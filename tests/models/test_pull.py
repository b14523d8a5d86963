"""Pulling from a loopback fake of the Hugging Face Hub: choosing files, split models, resuming,
checksums, and the errors for offline mode and an unreachable hub."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import pytest
from huggingface_hub import hf_hub_download

from hearth.errors import ChecksumMismatch, PullError
from hearth.models import pull as pull_module
from hearth.models.bundled import bundled_model_path
from hearth.models.gguf_info import read_gguf_info
from hearth.models.hub_ref import (
    HubFile,
    HubRef,
    choose,
    filename_problem,
    parse_ref,
    quantization_of,
)
from hearth.models.pull import pull
from hearth.models.store import ModelStore
from support.fake_hub import COMMIT, FakeHub
from support.gguf_files import write_gguf
from support.ports import free_port

REPO = "acme/tiny-GGUF"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "data" / "models")


@pytest.fixture(autouse=True)
def no_retry_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull_module, "RETRY_DELAY", 0.0)


def tiny(tmp_path: Path, name: str, **kwargs: object) -> bytes:
    return write_gguf(tmp_path / "src" / name, **kwargs).read_bytes()  # type: ignore[arg-type]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_refs_are_parsed() -> None:
    assert parse_ref("owner/repo") == HubRef("owner/repo")
    assert parse_ref("owner/repo:Q5_K_M") == HubRef("owner/repo", tag="Q5_K_M")
    assert parse_ref("owner/repo/sub/f.gguf") == HubRef("owner/repo", filename="sub/f.gguf")
    assert parse_ref("hf.co/owner/repo:Q8_0") == HubRef("owner/repo", tag="Q8_0")
    for bad in ("repo", "owner/repo/file.bin", "a/b/../../x.gguf", "owner/repo:", "o w/r"):
        with pytest.raises(PullError, match="owner/repo:Q5_K_M"):
            parse_ref(bad)


def test_quantization_from_file_names() -> None:
    assert quantization_of("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quantization_of("model.q8_0.gguf") == "Q8_0"
    assert quantization_of("Q5_K_M/model-00001-of-00002.gguf") == "Q5_K_M"
    assert quantization_of("model-UD-IQ2_XXS.gguf") == "UD-IQ2_XXS"
    assert quantization_of("model-bf16.gguf") == "BF16"
    assert quantization_of("model.gguf") is None


def files(*names: str) -> list[HubFile]:
    return [HubFile(n, 1, "0" * 64, None) for n in names]


def test_choosing_files() -> None:
    repo = files("m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-Q2_K.gguf", "mmproj-m-f16.gguf", "README.md")
    assert choose(HubRef("o/r"), repo).tag == "Q4_K_M"
    assert choose(HubRef("o/r", tag="q8_0"), repo).files[0].name == "m-Q8_0.gguf"
    with pytest.raises(PullError, match=r"no Q5_K_M file; available: Q2_K, Q4_K_M, Q8_0"):
        choose(HubRef("o/r", tag="Q5_K_M"), repo)
    # No Q4_K_M: the next preference present, else the choices.
    assert choose(HubRef("o/r"), files("m-Q8_0.gguf", "m-Q2_K.gguf")).tag == "Q8_0"
    with pytest.raises(PullError, match=r"none is Q4_K_M.*TAG one of: IQ3_M, Q2_K"):
        choose(HubRef("o/r"), files("m-IQ3_M.gguf", "m-Q2_K.gguf"))
    assert choose(HubRef("o/r"), files("only.gguf")).tag == "only"
    with pytest.raises(PullError, match=r"several files.*a-Q4_K_M.gguf, b-Q4_K_M.gguf"):
        choose(HubRef("o/r"), files("a-Q4_K_M.gguf", "b-Q4_K_M.gguf"))
    with pytest.raises(PullError, match="has no GGUF files"):
        choose(HubRef("o/r"), files("model.safetensors"))
    with pytest.raises(
        PullError, match=r"has no file x.gguf; its GGUF files: m-Q2_K.gguf, m-Q4_K_M.gguf"
    ):
        choose(HubRef("o/r", filename="x.gguf"), repo)


def test_split_parts_are_one_choice() -> None:
    repo = files(*(f"Q4_K_M/m-{i:05d}-of-00003.gguf" for i in (1, 2, 3)), "m-Q8_0.gguf")
    choice = choose(HubRef("o/r"), repo)
    assert choice.tag == "Q4_K_M" and len(choice.files) == 3
    by_part = choose(HubRef("o/r", filename="Q4_K_M/m-00002-of-00003.gguf"), repo)
    assert by_part == choice  # naming any part pulls them all
    with pytest.raises(PullError, match="has 2 of the 3 parts"):
        choose(HubRef("o/r"), repo[1:])


def test_pull_by_repo_picks_q4_k_m(
    fake_hub: FakeHub, store: ModelStore, bundled_model_dir: Path, tmp_path: Path
) -> None:
    bundled = bundled_model_path(bundled_model_dir)
    fake_hub.add_file("google/gemma-3-270m-GGUF", "gemma-3-270m-Q4_K_M.gguf", bundled)
    fake_hub.add_file("google/gemma-3-270m-GGUF", "gemma-3-270m-Q8_0.gguf", tiny(tmp_path, "a"))
    seen: list[tuple[str, int, int | None]] = []
    model = pull("google/gemma-3-270m-GGUF", store, progress=lambda f, d, t: seen.append((f, d, t)))
    assert model.name == "google/gemma-3-270m-GGUF:Q4_K_M"
    assert model.kind == "pulled" and model.copied
    folder = store.models_dir / "hub/google/gemma-3-270m-GGUF" / COMMIT  # a folder per revision
    assert model.path == folder / "gemma-3-270m-Q4_K_M.gguf"
    assert model.path.stat().st_size == bundled.stat().st_size
    assert read_gguf_info(model.path).architecture == "gemma3"
    assert seen[-1][1] == seen[-1][2] == bundled.stat().st_size
    assert store.get(model.name) == model
    assert fake_hub.downloads_of("gemma-3-270m-Q8_0.gguf") == 0
    assert not list(model.path.parent.glob("*.partial"))


def test_pull_by_tag_and_by_file(fake_hub: FakeHub, store: ModelStore, tmp_path: Path) -> None:
    q8, q4 = tiny(tmp_path, "q8", vocab=10), tiny(tmp_path, "q4", vocab=20)
    fake_hub.add_file(REPO, "tiny-Q8_0.gguf", q8)
    fake_hub.add_file(REPO, "sub/tiny-Q4_K_M.gguf", q4)
    by_tag = pull(f"{REPO}:Q8_0", store)
    assert by_tag.name == f"{REPO}:Q8_0" and by_tag.path.read_bytes() == q8
    assert by_tag.sha256 == (sha256(q8),)
    by_file = pull(f"{REPO}/sub/tiny-Q4_K_M.gguf", store, name="mine")
    assert by_file.name == "mine" and by_file.path.read_bytes() == q4
    assert by_file.path.parent.name == "sub"


def test_pull_a_split_model(fake_hub: FakeHub, store: ModelStore, tmp_path: Path) -> None:
    parts = {}
    for i in (1, 2, 3):
        name = f"big-Q4_K_M-{i:05d}-of-00003.gguf"
        parts[name] = tiny(tmp_path, name, extra={"split.count": 3}, vocab=10 * i)
        fake_hub.add_file(REPO, name, parts[name])
    model = pull(REPO, store)
    assert model.name == f"{REPO}:Q4_K_M"
    assert [f.name for f in model.files] == list(parts)
    assert all(f.read_bytes() == parts[f.name] for f in model.files)
    assert model.path.name == "big-Q4_K_M-00001-of-00003.gguf"
    assert model.size == sum(len(b) for b in parts.values())


def test_pulling_again_downloads_nothing(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    fake_hub.add_file(REPO, "tiny-Q4_K_M.gguf", tiny(tmp_path, "t"))
    first = pull(REPO, store)
    second = pull(REPO, store)
    assert second.path == first.path
    assert fake_hub.downloads_of("tiny-Q4_K_M.gguf") == 1


def test_an_interrupted_transfer_is_resumed(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    data = tiny(tmp_path, "t", vocab=2000)
    fake_hub.add_file(REPO, "tiny-Q4_K_M.gguf", data)
    fake_hub.cut_after["tiny-Q4_K_M.gguf"] = 5000  # the connection drops once, mid-file
    model = pull(REPO, store)
    assert fake_hub.ranges_for("tiny-Q4_K_M.gguf") == ["bytes=5000-"]
    assert model.path.read_bytes() == data


def test_a_pull_that_fails_is_resumed_by_the_next_one(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    data = tiny(tmp_path, "t", vocab=4000)
    fake_hub.add_file(REPO, "tiny-Q4_K_M.gguf", data)
    fake_hub.cut_after["tiny-Q4_K_M.gguf"] = 3000
    fake_hub.cuts["tiny-Q4_K_M.gguf"] = pull_module.ATTEMPTS  # every attempt of this pull
    with pytest.raises(PullError, match=r"interrupted.*9000 bytes are kept.*again resumes"):
        pull(REPO, store)
    assert f"{REPO}:Q4_K_M" not in store
    partial = store.models_dir / "hub" / REPO / COMMIT / "tiny-Q4_K_M.gguf.partial"
    assert partial.stat().st_size == 9000

    model = pull(REPO, store)  # the network is back
    assert fake_hub.ranges_for("tiny-Q4_K_M.gguf")[-1] == "bytes=9000-"
    assert model.path.read_bytes() == data and not partial.exists()
    assert model.sha256 == (sha256(data),)


def test_a_corrupted_file_is_rejected_and_not_registered(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    fake_hub.add_file(REPO, "tiny-Q4_K_M.gguf", tiny(tmp_path, "t"))
    fake_hub.corrupt.add("tiny-Q4_K_M.gguf")
    with pytest.raises(ChecksumMismatch, match="does not match the sha256 the hub publishes"):
        pull(REPO, store)
    assert f"{REPO}:Q4_K_M" not in store
    assert list((store.models_dir / "hub" / REPO).iterdir()) == []


def test_offline_mode_says_to_import(
    fake_hub: FakeHub, store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PullError, match=r"offline mode.*hearth import PATH"):
        pull(REPO, store)
    assert fake_hub.requests == []


def test_an_unreachable_hub_says_so(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(PullError, match=rf"cannot reach the Hugging Face Hub at {endpoint}.*"
                       r"hearth import PATH"):  # fmt: skip
        pull(REPO, store)


def test_an_unknown_repository(fake_hub: FakeHub, store: ModelStore) -> None:
    with pytest.raises(PullError, match=r"no model repository acme/nope.*HF_TOKEN"):
        pull("acme/nope", store)


def test_hf_token_is_sent(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    fake_hub.add_file(REPO, "tiny-Q4_K_M.gguf", tiny(tmp_path, "t"))
    pull(REPO, store)
    assert {s.authorization for s in fake_hub.requests} == {"Bearer hf_secret"}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../../../../evil.gguf", "'..' part"),
        ("sub/../x.gguf", "'..' part"),
        ("a//x.gguf", "an empty"),
        ("./x.gguf", "'.' or '..' part"),
        ("/tmp/x.gguf", "absolute path"),
        ("sub\\x.gguf", "backslash"),
        ("x\x00.gguf", "control characters"),
        ("x\n.gguf", "control characters"),
        ("x" * 300 + ".gguf", "longer than 255 bytes"),
        ("a/" * 600 + "x.gguf", "longer than 1024 characters"),
        ("", "it is empty"),
    ],
)
def test_unsafe_hub_file_names(name: str, problem: str) -> None:
    found = filename_problem(name)
    assert found is not None and problem in found


def test_safe_hub_file_names() -> None:
    for name in ("m-Q4_K_M.gguf", "Q4_K_M/m-00001-of-00002.gguf", "a b (1).gguf", "é.gguf"):
        assert filename_problem(name) is None


@pytest.mark.parametrize("name", ["../../../../evil-Q4_K_M.gguf", "ABSOLUTE"])
def test_a_hostile_mirror_cannot_write_outside_the_models_folder(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path, name: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    name = str(outside / "x-Q4_K_M.gguf") if name == "ABSOLUTE" else name
    fake_hub.add_file(REPO, name, tiny(tmp_path, "t"))
    fake_hub.add_file(REPO, "fine-Q8_0.gguf", tiny(tmp_path, "u"))
    with pytest.raises(PullError, match=r"whose name is unsafe.*nothing was downloaded"):
        pull(REPO, store)
    assert not [p for p in tmp_path.rglob("*.gguf") if "src" not in p.parts]
    assert fake_hub.downloads_of(PurePosixPath(name).name) == 0


def test_a_repository_folder_linked_elsewhere_is_refused(
    fake_hub: FakeHub, store: ModelStore, tmp_path: Path
) -> None:
    fake_hub.add_file(REPO, "tiny-Q4_K_M.gguf", tiny(tmp_path, "t"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = store.models_dir / "hub" / REPO
    folder.parent.mkdir(parents=True)
    folder.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(PullError, match="would be written outside"):
        pull(REPO, store)
    assert list(elsewhere.iterdir()) == []


def test_the_fake_hub_serves_huggingface_hub_itself(fake_hub: FakeHub, tmp_path: Path) -> None:
    """Keeps the fake honest: the real client downloads from it with its own code path."""
    data = tiny(tmp_path, "t")
    fake_hub.add_file(REPO, "tiny-Q4_K_M.gguf", data)
    path = hf_hub_download(
        REPO, "tiny-Q4_K_M.gguf", cache_dir=tmp_path / "cache", endpoint=fake_hub.endpoint
    )
    assert Path(path).read_bytes() == data
