"""Hub references (`owner/repo`, `owner/repo:Q5_K_M`, `owner/repo/file.gguf`) and which GGUF
files of a repository one of them means.

Without a tag Hearth takes the only GGUF model in the repository, else the first quantization
of DEFAULT_QUANTIZATIONS present (Q4_K_M first, as Ollama and llama.cpp do); otherwise it lists
the choices (`hearth pull` and `/api/pull` choose by what fits the machine instead: see `fit`).
Split GGUFs (`name-00001-of-00003.gguf`) are one choice made of all their parts.
Vision projectors (`mmproj*.gguf`) are never chosen by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from hearth.errors import PullError
from hearth.models.gguf_info import SPLIT_PATTERN

DEFAULT_QUANTIZATIONS = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q4_0", "Q6_K", "Q8_0")
_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?Q\d(?:_[A-Z0-9]+)*|TQ\d_\d|BF16|F16|F32|MXFP4))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
MAX_FILENAME_CHARS = 1024  # a whole path in the repository
MAX_COMPONENT_BYTES = 255  # one folder or file name, as file systems allow


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    tag: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        if self.filename:
            return f"{self.repo_id}/{self.filename}"
        return f"{self.repo_id}:{self.tag}" if self.tag else self.repo_id


@dataclass(frozen=True)
class HubFile:
    """A file in a hub repository, with what the hub publishes to verify it."""

    name: str
    size: int | None
    sha256: str | None  # the LFS object's sha256
    blob_id: str | None  # the git blob id (sha1), for files not stored with LFS


@dataclass(frozen=True)
class Choice:
    """One model in a repository: a GGUF file, or every part of a split one."""

    tag: str  # the quantization, or the file's stem when its name states none
    files: tuple[HubFile, ...]

    @property
    def label(self) -> str:
        first = self.files[0].name
        return first if len(self.files) == 1 else f"{first} (+{len(self.files) - 1} parts)"


def parse_ref(ref: str) -> HubRef:
    """`owner/repo[:TAG]` or `owner/repo/path/to/file.gguf`; `PullError` with the forms if not."""
    text = ref.strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    parts = text.split("/")
    if len(parts) >= 3 and parts[-1].lower().endswith(".gguf"):
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
        if _REPO_ID.match(repo_id) and ".." not in PurePosixPath(filename).parts:
            return HubRef(repo_id, filename=filename)
    elif len(parts) == 2:
        repo_id, colon, tag = text.partition(":")
        if _REPO_ID.match(repo_id) and (not colon or _TAG.match(tag)):
            return HubRef(repo_id, tag=tag or None)
    raise PullError(
        f"{ref!r} is not a model reference; use owner/repo (default quantization), "
        "owner/repo:Q5_K_M (a quantization) or owner/repo/file.gguf (an exact file)"
    )


def filename_problem(name: str) -> str | None:
    """What makes a file name from a hub listing unsafe to write under the models folder, if
    anything: names come from whatever HF_ENDPOINT points at, and a hostile mirror may list
    `../../x.gguf` or `/etc/x.gguf`."""
    if not name:
        return "it is empty"
    if len(name) > MAX_FILENAME_CHARS:
        return f"it is longer than {MAX_FILENAME_CHARS} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "it holds control characters"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/"):
        return "it is an absolute path"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "it has an empty, '.' or '..' part"
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES for part in parts):
        return f"a part of it is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def check_filenames(repo_id: str, files: list[HubFile]) -> None:
    """`PullError` if the hub listed any file whose name is unsafe (see `filename_problem`)."""
    for file in files:
        problem = filename_problem(file.name)
        if problem is not None:
            raise PullError(
                f"the hub listed a file {file.name!r} in {repo_id} whose name is unsafe "
                f"({problem}); nothing was downloaded. If HF_ENDPOINT points at a mirror, check "
                "that it is one you trust"
            )


def quantization_of(filename: str) -> str | None:
    """The quantization a file's name states (`model-Q4_K_M.gguf` → Q4_K_M), if any."""
    path = PurePosixPath(filename)
    match = SPLIT_PATTERN.match(path.name)
    stem = match["stem"] if match else path.stem
    found = _QUANT.findall("/".join([*path.parent.parts, stem]))
    return found[-1].upper() if found else None


def group_choices(files: list[HubFile]) -> list[Choice]:
    """The GGUF models in a repository (split parts grouped), projectors left out."""
    groups: dict[str, list[HubFile]] = {}
    for file in files:
        path = PurePosixPath(file.name)
        if path.suffix.lower() != ".gguf" or path.name.lower().startswith("mmproj"):
            continue
        match = SPLIT_PATTERN.match(path.name)
        key = str(path.parent / match["stem"]) if match else file.name
        groups.setdefault(key, []).append(file)
    choices = []
    for key, members in sorted(groups.items()):
        members.sort(key=lambda f: f.name)
        stem = PurePosixPath(key).name.removesuffix(".gguf")
        choices.append(Choice(quantization_of(members[0].name) or stem, tuple(members)))
    return choices


def choose(ref: HubRef, files: list[HubFile]) -> Choice:
    """The files `ref` means in a repository holding `files`; `PullError` listing the choices."""
    by_name = {f.name: f for f in files}
    if ref.filename is not None:
        if ref.filename not in by_name:
            raise PullError(
                f"{ref.repo_id} has no file {ref.filename}; its GGUF files: "
                + _list(sorted(f.name for f in files if f.name.lower().endswith(".gguf")))
            )
        chosen = next(
            (c for c in group_choices(files) if ref.filename in {f.name for f in c.files}),
            Choice(quantization_of(ref.filename) or PurePosixPath(ref.filename).stem,
                   (by_name[ref.filename],)),
        )  # fmt: skip
        return _complete(chosen, ref)

    choices = group_choices(files)
    if not choices:
        raise PullError(
            f"{ref.repo_id} has no GGUF files; Hearth serves GGUF models (look for a repository "
            "whose name ends in -GGUF)"
        )
    if ref.tag is not None:
        matching = [c for c in choices if c.tag.upper() == ref.tag.upper()]
        if not matching:
            raise PullError(
                f"{ref.repo_id} has no {ref.tag} file; available: "
                + _list(sorted({c.tag for c in choices}))
            )
    elif len(choices) == 1:
        matching = choices
    else:
        for preferred in DEFAULT_QUANTIZATIONS:
            matching = [c for c in choices if c.tag == preferred]
            if matching:
                break
        else:
            raise PullError(
                f"{ref.repo_id} holds several models and none is {DEFAULT_QUANTIZATIONS[0]}; "
                f"pick one with {ref.repo_id}:TAG, TAG one of: "
                + _list(sorted({c.tag for c in choices}))
            )
    if len(matching) > 1:
        raise PullError(
            f"{ref} matches several files in {ref.repo_id}; name one with "
            f"{ref.repo_id}/FILE: " + _list([c.files[0].name for c in matching])
        )
    return _complete(matching[0], ref)


def _complete(choice: Choice, ref: HubRef) -> Choice:
    match = SPLIT_PATTERN.match(PurePosixPath(choice.files[0].name).name)
    if match is not None and len(choice.files) != int(match["count"]):
        raise PullError(
            f"{ref.repo_id} has {len(choice.files)} of the {int(match['count'])} parts of "
            f"{choice.files[0].name}; the model cannot be assembled"
        )
    return choice


def _list(names: list[str]) -> str:
    return ", ".join(names) if names else "none"
