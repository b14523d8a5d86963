"""How Hearth's request path was chosen: the upstream HTTP client and the server's event loop and
HTTP parser, each measured in CPU time per request against the same static nginx upstream.

1. Upstream client: httpx vs aiohttp, both pooled, 64 requests in flight, non-streamed and
   streamed, on the default asyncio loop and on uvloop.
2. Server stack: a minimal Starlette app under uvicorn with asyncio + h11 vs uvloop + httptools,
   64 requests in flight from an aiohttp load generator in another process.
3. The floor: the latency a minimal Python proxy (aiohttp server and client on uvloop, ~20
   lines, no validation, routing, metrics or logging) adds at concurrency 1 on this machine;
   what any Python gateway pays before doing anything useful.

CPU time is the measuring process's own (`time.process_time`), so other load on the machine
changes it far less than wall-clock rates. Writes its own section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from common import DEFAULT_OUTPUT, HOST, Processes, Server, machine, machine_line, run_and_report
from gateway_overhead import find_nginx, nginx_config
from hearth.engines.ports import free_port

SECTION = "hot-path"
BODY = json.dumps(
    {"model": "static", "messages": [{"role": "user", "content": "hello " * 30}]}
).encode()
JSON_HEADERS = {"content-type": "application/json"}


async def _drive(one: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> float:
    """CPU seconds per request of this process while `requests` calls run `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded() -> None:
        async with gate:
            await one()

    await asyncio.gather(*(bounded() for _ in range(min(200, requests))))  # warm the pool
    started = time.process_time()
    await asyncio.gather(*(bounded() for _ in range(requests)))
    return (time.process_time() - started) / requests


async def _client_costs(which: str, base: str, requests: int) -> dict[str, float]:
    json_url, sse_url = f"{base}/json/v1/chat/completions", f"{base}/sse/v1/chat/completions"
    if which == "httpx":
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            trust_env=False,
        )

        async def plain() -> None:
            response = await client.post(json_url, content=BODY, headers=JSON_HEADERS)
            response.json()

        async def stream() -> None:
            async with client.stream("POST", sse_url, content=BODY, headers=JSON_HEADERS) as r:
                async for _ in r.aiter_bytes():
                    pass

        try:
            return {
                "json": await _drive(plain, requests, 64),
                "sse": await _drive(stream, requests, 64),
            }
        finally:
            await client.aclose()

    import aiohttp

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512, limit_per_host=0), trust_env=False
    ) as session:

        async def plain_aio() -> None:
            async with session.post(json_url, data=BODY, headers=JSON_HEADERS) as response:
                json.loads(await response.read())

        async def stream_aio() -> None:
            async with session.post(sse_url, data=BODY, headers=JSON_HEADERS) as response:
                async for _ in response.content.iter_any():
                    pass

        return {
            "json": await _drive(plain_aio, requests, 64),
            "sse": await _drive(stream_aio, requests, 64),
        }


def measure_clients(base: str, requests: int) -> dict[str, dict[str, float]]:
    import uvloop

    results: dict[str, dict[str, float]] = {}
    for which in ("httpx", "aiohttp"):
        results[f"{which} (asyncio)"] = asyncio.run(_client_costs(which, base, requests))
        results[f"{which} (uvloop)"] = uvloop.run(_client_costs(which, base, requests))
    return results


# A minimal ASGI app: what the server stack alone costs per request.
APP = textwrap.dedent(
    """
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    ANSWER = b'{"object": "chat.completion", "choices": []}'

    async def answer(request):
        await request.body()
        return Response(ANSWER, media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", answer, methods=["POST"])])
    """
)


MINIMAL_PROXY = textwrap.dedent(
    """
    import sys
    import aiohttp
    import uvloop
    from aiohttp import web

    UPSTREAM, PORT = sys.argv[1], int(sys.argv[2])

    async def main():
        session = aiohttp.ClientSession()

        async def forward(request):
            body = await request.read()
            headers = {"content-type": "application/json"}
            async with session.post(UPSTREAM, data=body, headers=headers) as answer:
                data = await answer.read()
            return web.Response(body=data, content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", PORT).start()
        await asyncio.Event().wait()

    import asyncio
    uvloop.run(main())
    """
)


async def _latencies(url: str, requests: int) -> list[float]:
    """Seconds per request, one at a time over one kept-alive connection."""
    import aiohttp

    async with aiohttp.ClientSession(trust_env=False) as session:
        timings = []
        for i in range(requests + 50):
            started = time.perf_counter()
            async with session.post(url, data=BODY, headers=JSON_HEADERS) as response:
                await response.read()
            if i >= 50:  # warmed up
                timings.append(time.perf_counter() - started)
    return sorted(timings)


def measure_floor(
    processes: Processes, work: Path, base: str, requests: int
) -> dict[str, dict[str, float]]:
    (work / "minimal_proxy.py").write_text(MINIMAL_PROXY)
    port = free_port()
    upstream = f"{base}/json/v1/chat/completions"
    argv = [sys.executable, str(work / "minimal_proxy.py"), upstream, str(port)]
    proxy = Server("minimal proxy", argv, port, "/", work / "proxy.log")
    processes.spawn(proxy)
    _wait_listening(port)
    results = {}
    for name, url in (
        ("direct", upstream),
        ("minimal proxy", f"http://{HOST}:{port}/v1/chat/completions"),
    ):
        timings = asyncio.run(_latencies(url, requests))
        results[name] = {
            "p50": timings[len(timings) // 2],
            "p99": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
        }
    processes.stop(proxy)
    return results


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(url: str, requests: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), trust_env=False
    ) as session:

        async def one() -> None:
            async with session.post(url, data=BODY, headers=JSON_HEADERS) as response:
                await response.read()

        await _drive(one, requests, 64)


def measure_servers(processes: Processes, work: Path, requests: int) -> dict[str, dict[str, float]]:
    (work / "minimal_app.py").write_text(APP)
    results: dict[str, dict[str, float]] = {}
    for name, loop, http in (
        ("uvicorn asyncio + h11", "asyncio", "h11"),
        ("uvicorn uvloop + httptools", "uvloop", "httptools"),
    ):
        port = free_port()
        argv = [
            sys.executable, "-m", "uvicorn", "minimal_app:app", "--app-dir", str(work),
            "--host", HOST, "--port", str(port), "--loop", loop, "--http", http,
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        server = Server(name, argv, port, "/docs", work / f"{loop}.log")
        processes.spawn(server)
        _wait_listening(port)
        assert server.proc is not None
        url = f"http://{HOST}:{port}/v1/chat/completions"
        asyncio.run(_load(url, 200))
        before = _cpu_seconds(server.proc.pid)
        asyncio.run(_load(url, requests))
        results[name] = {"json": (_cpu_seconds(server.proc.pid) - before) / requests}
        processes.stop(server)
    return results


def _wait_listening(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def measure(options: argparse.Namespace) -> Callable[[Processes, Path], dict[str, Any]]:
    def run(processes: Processes, work: Path) -> dict[str, Any]:
        port = free_port()
        nginx = find_nginx(None)
        (work / "nginx.conf").write_text(nginx_config(work, port))
        argv = [str(nginx), "-p", str(work), "-e", str(work / "error.log"), "-c", "nginx.conf"]
        processes.spawn(Server("nginx", argv, port, "/json/v1/models", work / "nginx.log"))
        _wait_listening(port)
        base = f"http://{HOST}:{port}"
        return {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "versions": {
                name: importlib.metadata.version(name)
                for name in ("httpx", "aiohttp", "uvicorn", "uvloop", "httptools", "starlette")
            },
            "requests": options.requests,
            "clients": measure_clients(base, options.requests),
            "servers": measure_servers(processes, work, options.requests),
            "floor": measure_floor(processes, work, base, min(options.requests, 2000)),
        }

    return run


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def markdown(report: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    lines = [
        "<!-- hot-path:start -->",
        "## Choosing the request path: upstream client and server stack",
        "",
        f"Written by `bench/hot_path.py` on {report['date']}; rerun it rather than editing.",
        "",
        machine_line(report["machine"]),
        f"- **Versions:** {versions}",
        f"- **Command:** `python bench/hot_path.py --requests {report['requests']}`",
        "",
        "CPU time per request (µs) of the process doing the work, 64 requests in flight against "
        "a static nginx (see the gateway section for the upstream).",
        "",
        "| upstream client | non-streamed | streamed |",
        "|---|---:|---:|",
    ]
    for name, costs in report["clients"].items():
        lines.append(f"| {name} | {_us(costs['json'])} | {_us(costs['sse'])} |")
    lines += ["", "| server stack (minimal app) | non-streamed |", "|---|---:|"]
    for name, costs in report["servers"].items():
        lines.append(f"| {name} | {_us(costs['json'])} |")
    floor = report["floor"]
    added = {k: floor["minimal proxy"][k] - floor["direct"][k] for k in ("p50", "p99")}
    lines += [
        "",
        "| latency at concurrency 1 (ms) | p50 | p99 |",
        "|---|---:|---:|",
        *(
            f"| {name} | {v['p50'] * 1000:.2f} | {v['p99'] * 1000:.2f} |"
            for name, v in floor.items()
        ),
        f"| added by the minimal proxy | {added['p50'] * 1000:.2f} | {added['p99'] * 1000:.2f} |",
        "",
        "The last row is the floor: what a 20-line aiohttp proxy on uvloop, doing nothing but "
        "relaying, adds on this machine before any validation, routing, metrics or logging.",
        "",
        "Hearth uses aiohttp for upstream calls and runs under uvicorn with uvloop and httptools "
        "(uvicorn picks them when installed; they are dependencies).",
        "<!-- hot-path:end -->",
        "",
    ]
    return "\n".join(lines)


def show(console: Console, report: dict[str, Any]) -> None:
    console.print(markdown(report))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per measurement")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args(argv)
    return run_and_report(
        Console(),
        section=SECTION,
        output=options.output,
        json_path=options.json,
        measure=measure(options),
        show=show,
        markdown=markdown,
    )


if __name__ == "__main__":
    raise SystemExit(main())
