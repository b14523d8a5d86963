"""Ollama's `name:tag` model names and Hearth's catalogue and store names, both ways.

Ollama names every model `name:tag`, with `latest` as the tag when none is given, and lists them
that way. Hearth's names are the catalogue's: a single word for the bundled and imported models
(`gemma-3-270m`) and `owner/repo:QUANT` for pulled ones. So a Hearth name without a tag is listed
as `name:latest`, and `name:latest` (and `hf.co/owner/repo:QUANT`, Ollama's form for a model from
the Hugging Face Hub) resolve to the catalogue name. A name the catalogue knows as given always
wins.
"""

from __future__ import annotations

from collections.abc import Callable

from hearth.errors import ModelNotFound

LATEST = ":latest"
HUB_PREFIXES = ("hf.co/", "huggingface.co/")


def candidates(name: str) -> list[str]:
    """The names `name` may stand for, most literal first."""
    found = [name]
    for prefix in HUB_PREFIXES:
        if name.startswith(prefix):
            found.append(name.removeprefix(prefix))
            break
    found += [n.removesuffix(LATEST) for n in found if n.endswith(LATEST)]
    return list(dict.fromkeys(found))


def resolve(name: str, known: Callable[[str], bool], available: list[str]) -> str:
    """The Hearth name `name` means, given which names exist; `ModelNotFound` if none."""
    for candidate in candidates(name):
        if known(candidate):
            return candidate
    raise ModelNotFound(name, available)


def listed(name: str) -> str:
    """How Ollama lists a Hearth name: with `:latest` when it has no tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else name + LATEST


def canonical(name: str) -> str:
    """A name to store under: Ollama's default tag dropped, so that `x:latest` is `x`."""
    return name.removesuffix(LATEST)
