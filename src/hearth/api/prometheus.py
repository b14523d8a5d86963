"""GET /metrics in Prometheus text format: Hearth's own metrics, plus each loaded llama-server's
(`--metrics`: KV-cache use, requests processing and deferred, tokens) re-exported with a model
label as `hearth_engine_*`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import httpx
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from hearth.api.services import Services, services_of
from hearth.engines.supervisor import EngineState

router = APIRouter()
ENGINE_SCRAPE_TIMEOUT = 2.0


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    engines = _Families(await _engine_metrics(services_of(request)))
    body = generate_latest(registry) + generate_latest(engines)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class _Families:
    """What generate_latest needs of a registry: something to collect from."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def _engine_metrics(services: Services) -> list[Metric]:
    engines = {
        model.deployment.name: model.supervisor.process.base_url
        for model in services.scheduler.loaded()
        if model.supervisor.state is EngineState.READY and model.supervisor.process is not None
    }
    texts = await asyncio.gather(*(_fetch(url) for url in engines.values()))
    merged: dict[str, Metric] = {}
    for model, text in zip(engines, texts, strict=True):
        for family in text_string_to_metric_families(text):
            name = "hearth_engine_" + family.name.removeprefix("llamacpp:").replace(":", "_")
            target = merged.setdefault(name, Metric(name, family.documentation, family.type))
            for sample in family.samples:
                sample_name = "hearth_engine_" + sample.name.removeprefix("llamacpp:").replace(
                    ":", "_"
                )
                target.add_sample(sample_name, {**sample.labels, "model": model}, sample.value)
    return list(merged.values())


async def _fetch(base_url: str) -> str:
    """An engine's metrics text; empty when it does not answer in time (it may be busy)."""
    with contextlib.suppress(httpx.HTTPError):
        async with httpx.AsyncClient(timeout=ENGINE_SCRAPE_TIMEOUT, trust_env=False) as client:
            response = await client.get(f"{base_url}/metrics")
            if response.status_code == 200:
                return response.text
    return ""
