"""A route's semantic classifier: classes defined by a few example prompts each, told apart by
nearest neighbour (cosine similarity) over an embeddings model that Hearth itself serves.

The examples are embedded once, on first use, and kept with the classifier; a settings reload
builds a new classifier, so changed examples are embedded again. A request's text is embedded
through the same routing path as any embeddings request (the model's engine or deployment, its
breaker and fallbacks), never by a private copy of the model."""

from __future__ import annotations

import asyncio
import math
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hearth.config import ClassifierSettings
from hearth.deployments.deployment import Route

# What of a request is embedded: all-MiniLM-L6-v2 reads at most 256 word pieces and its engine
# refuses more than its 512-token context, and a word piece covers at least one character.
MAX_TEXT_CHARS = 500

Embed = Callable[[Route, list[str]], Awaitable[list[list[float]]]]


@dataclass
class Classification:
    label: str | None  # None: no example was similar enough
    similarity: float


@dataclass
class Classifier:
    model: Route  # the embeddings model's route
    settings: ClassifierSettings
    _examples: list[tuple[str, list[float]]] | None = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def classify(self, text: str, embed: Embed) -> Classification:
        """The class of the example nearest to `text` (its first MAX_TEXT_CHARS characters)."""
        examples = await self.examples(embed)
        (vector,) = await embed(self.model, [text[:MAX_TEXT_CHARS]])
        query = unit(vector)
        label, best = None, -2.0
        for name, example in examples:
            similarity = sum(map(operator.mul, query, example))
            if similarity > best:
                label, best = name, similarity
        if best < self.settings.min_similarity:
            return Classification(None, best)
        return Classification(label, best)

    async def examples(self, embed: Embed) -> list[tuple[str, list[float]]]:
        """Each example's class and unit vector, embedded in one call the first time (a failed
        call is tried again by the next request)."""
        if self._examples is not None:
            return self._examples
        async with self._lock:
            if self._examples is None:
                labelled = [
                    (name, text[:MAX_TEXT_CHARS])
                    for name, texts in self.settings.classes.items()
                    for text in texts
                ]
                vectors = await embed(self.model, [text for _, text in labelled])
                names = [name for name, _ in labelled]
                self._examples = [
                    (name, unit(vector)) for name, vector in zip(names, vectors, strict=True)
                ]
            return self._examples


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else list(vector)
