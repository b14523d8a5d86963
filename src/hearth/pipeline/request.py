"""What a protocol translator hands the pipeline: one request to a model in OpenAI's shape, with
who sent it and how it should be treated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hearth.auth.keys import KeyRecord
from hearth.routing.request import Trace


@dataclass
class PipelineRequest:
    model: str  # the name the client asked for (a model, route or alias)
    path: str  # the OpenAI path it is sent to, e.g. "/v1/chat/completions"
    capability: str  # what the model must support: "chat", "completion", "embeddings", ...
    fields: dict[str, Any]  # the OpenAI-shaped body, validated, as the client set it
    request_id: str
    trace: Trace  # filled in on the way; read by accounting and the access log
    caller: KeyRecord | None = None  # the key that authenticated it (None: keys are off)
    priority: int = 0
    keep_alive: float | None = None
    cache_control: str = ""
    inputs: frozenset[str] = frozenset()  # what else the model must accept: "vision" for images
    headers: Mapping[str, str] | None = None  # the HTTP request's headers (route rules read them)
