"""OpenTelemetry tracing end to end: a real Hearth exports spans over OTLP/HTTP to a collector of
the test's own on loopback; the caller's trace continues through Hearth to the upstream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from support.hearth_server import StartHearth
from support.scripted_upstream import ScriptedUpstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Collector:
    """Receives OTLP/HTTP trace exports and keeps the spans."""

    def __init__(self) -> None:
        self.spans: list[object] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def names(self) -> set[str]:
        return {span.name for span in self.spans}  # type: ignore[attr-defined]


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_a_request_is_traced_from_the_caller_to_the_upstream(
    start_hearth: StartHearth, collector: Collector, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        f"tracing: {{enabled: true, endpoint: '{collector.url}', service_name: hearth-test}}\n"
        f"deployments:\n  traced: {{url: '{upstream.url('traced')}'}}\n"
    )
    # Export every 100 ms instead of every 5 s.
    server = start_hearth("--config", str(config), env={"OTEL_BSP_SCHEDULE_DELAY": "100"})
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "traced", "messages": [{"role": "user", "content": "hi"}]},
        headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
        timeout=30,
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 10
    while not {"POST /v1/chat/completions", "route", "upstream"} <= collector.names():
        assert time.monotonic() < deadline, f"spans so far: {collector.names()}"
        time.sleep(0.1)
    ours = [s for s in collector.spans if s.trace_id.hex() == TRACE_ID]  # type: ignore[attr-defined]
    by_name = {s.name: s for s in ours}  # type: ignore[attr-defined]
    assert {"POST /v1/chat/completions", "route", "upstream"} <= set(by_name)
    root, route, call = (
        by_name["POST /v1/chat/completions"],
        by_name["route"],
        by_name["upstream"],
    )
    assert root.parent_span_id.hex() == CALLER_SPAN  # type: ignore[attr-defined]
    assert route.parent_span_id == root.span_id  # type: ignore[attr-defined]
    assert call.parent_span_id == route.span_id  # type: ignore[attr-defined]
    attributes = {a.key: a.value.string_value for a in call.attributes}  # type: ignore[attr-defined]
    assert attributes["hearth.deployment"] == "traced"
    # The upstream was called inside the same trace.
    sent = upstream.received["traced"][-1].headers["traceparent"]
    assert sent.split("-")[1] == TRACE_ID
    assert sent.split("-")[2] == call.span_id.hex()  # type: ignore[attr-defined]


def test_tracing_is_off_by_default_and_costs_no_span(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    config = tmp_path / "hearth.yaml"
    config.write_text(f"preload: []\ndeployments:\n  plain: {{url: '{upstream.url('plain')}'}}\n")
    server = start_hearth("--config", str(config))
    httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "plain", "messages": [{"role": "user", "content": "hi"}]},
        headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
        timeout=30,
    )
    assert "traceparent" not in upstream.received["plain"][-1].headers
