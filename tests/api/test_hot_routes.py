"""The generation endpoints are served by plain Starlette routes matched first; the FastAPI routes
behind them keep the endpoints in the OpenAPI schema."""

from __future__ import annotations

import httpx

from support.hearth_server import HearthServer


def test_the_schema_still_lists_the_generation_endpoints(hearth: HearthServer) -> None:
    schema = httpx.get(f"{hearth.base_url}/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert "post" in schema["paths"][path], path


def test_a_generation_request_is_labelled_with_its_route_in_the_metrics(
    hearth: HearthServer,
) -> None:
    """Plain Starlette routes do not record themselves in the scope as FastAPI's do; without
    that every generation request would be counted under endpoint="other"."""
    labels = 'deployment="",endpoint="/v1/completions",model="",status="400"'

    def refused() -> float:
        for line in httpx.get(f"{hearth.base_url}/metrics").text.splitlines():
            if line.startswith("hearth_requests_total{" + labels + "}"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = refused()
    assert httpx.post(f"{hearth.base_url}/v1/completions", content=b"{not json").status_code == 400
    assert refused() == before + 1
