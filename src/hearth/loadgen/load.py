"""Drive load at fixed concurrency and summarise it: `run_load(LoadSpec) -> LoadResult`.

Each level keeps `concurrency` requests in flight over one pooled (keep-alive) session until a
number of requests is done or a duration has passed; the requests in flight at the deadline are
waited for and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from hearth.loadgen import DEFAULT_REQUESTS
from hearth.loadgen.client import Outcome, Target
from hearth.loadgen.prompt import build_prompt

Endpoint = Literal["chat", "completions"]
ENDPOINT_PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "completions": "/completions"}
ERROR_KINDS_KEPT = 5  # distinct error messages remembered per level
PROGRESS_INTERVAL_S = 0.25
# Idle pooled connections are dropped before uvicorn's and llama-server's 5 s keep-alive limit
# can close one under a request.
KEEPALIVE_S = 4.0


@dataclass(frozen=True)
class LoadSpec:
    """What to send, where, and how much; `concurrency` is one level (see `run_sweep`)."""

    url: str  # the base URL of the OpenAI API, e.g. http://127.0.0.1:8080/v1
    model: str
    api_key: str | None = None
    endpoint: Endpoint = "chat"
    concurrency: int = 1
    requests: int | None = None  # this many measured requests...
    duration_s: float | None = None  # ...or as many as start within this time
    prompt_tokens: int = 32  # approximate
    max_tokens: int = 64
    stream: bool = True
    warmup: int = 0  # requests sent before measuring each level, not counted
    timeout_s: float = 600.0  # per request
    extra_body: Mapping[str, Any] = field(default_factory=dict)  # merged into every request
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, not {self.url!r}")
        if self.endpoint not in ENDPOINT_PATHS:
            raise ValueError(f"endpoint must be 'chat' or 'completions', not {self.endpoint!r}")
        if self.requests is not None and self.duration_s is not None:
            raise ValueError("give requests or duration_s, not both")
        positive = {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "duration_s": self.duration_s,
            "prompt_tokens": self.prompt_tokens,
            "max_tokens": self.max_tokens,
            "timeout_s": self.timeout_s,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be 0 or more, not {self.warmup}")

    @property
    def endpoint_url(self) -> str:
        return self.url.rstrip("/") + ENDPOINT_PATHS[self.endpoint]

    def body(self) -> dict[str, Any]:
        """The request every worker sends."""
        prompt = build_prompt(self.prompt_tokens)
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body | dict(self.extra_body)

    def request_headers(self) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return auth | dict(self.headers)


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles | None:
        if not values:
            return None
        ordered = sorted(values)
        return cls(
            percentile(ordered, 50),
            percentile(ordered, 95),
            percentile(ordered, 99),
            math.fsum(ordered) / len(ordered),
        )

    def scaled(self, factor: float) -> dict[str, float]:
        return {k: round(v * factor, 3) for k, v in dataclasses.asdict(self).items()}


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile of sorted values, linearly interpolated (numpy's default)."""
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class LoadResult:
    """One concurrency level: counts, rates and the raw per-request timings (seconds)."""

    concurrency: int
    stream: bool
    requests: int  # measured requests that finished, successful or not
    errors: int
    duration_s: float
    output_tokens: int
    prompt_tokens: float | None  # mean per request, as the server counted them
    tokens_counted_from: str  # "usage", "chunks" (streams without usage), "none", or a mix
    latencies_s: list[float] = field(default_factory=list)  # successful requests only
    ttfts_s: list[float] = field(default_factory=list)
    error_messages: dict[str, int] = field(default_factory=dict)  # the first few kinds

    @property
    def ok(self) -> int:
        return self.requests - self.errors

    @property
    def requests_per_s(self) -> float:
        """Successful requests per second of the level's wall time."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def latency(self) -> Percentiles | None:
        return Percentiles.of(self.latencies_s)

    @property
    def ttft(self) -> Percentiles | None:
        return Percentiles.of(self.ttfts_s)

    def summary(self) -> dict[str, Any]:
        """The JSON form: everything but the raw timings; times in milliseconds."""
        latency, ttft = self.latency, self.ttft
        return {
            "concurrency": self.concurrency,
            "stream": self.stream,
            "requests": self.requests,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 3),
            "requests_per_s": round(self.requests_per_s, 3),
            "output_tokens": self.output_tokens,
            "output_tokens_per_s": round(self.output_tokens_per_s, 3),
            "tokens_counted_from": self.tokens_counted_from,
            "prompt_tokens_mean": None
            if self.prompt_tokens is None
            else round(self.prompt_tokens, 1),
            "ttft_ms": None if ttft is None else ttft.scaled(1000),
            "latency_ms": None if latency is None else latency.scaled(1000),
            "error_messages": self.error_messages,
        }


@dataclass(frozen=True)
class LoadProgress:
    """Passed to a progress callback a few times a second while a level is measured."""

    concurrency: int
    done: int
    errors: int
    elapsed_s: float
    total: int | None  # requests, or None when the level runs for a duration
    duration_s: float | None


ProgressCallback = Callable[[LoadProgress], None]


def run_load(spec: LoadSpec, progress: ProgressCallback | None = None) -> LoadResult:
    """Measure one level (`spec.concurrency`); blocks, so call it outside an event loop."""
    return asyncio.run(load(spec, progress))


def run_sweep(
    spec: LoadSpec, levels: Sequence[int], progress: ProgressCallback | None = None
) -> list[LoadResult]:
    """Measure each concurrency level in turn over one session."""
    return asyncio.run(sweep(spec, levels, progress))


async def load(spec: LoadSpec, progress: ProgressCallback | None = None) -> LoadResult:
    return (await sweep(spec, [spec.concurrency], progress))[0]


async def sweep(
    spec: LoadSpec, levels: Sequence[int], progress: ProgressCallback | None = None
) -> list[LoadResult]:
    if not levels or min(levels) < 1:
        raise ValueError("concurrency levels must be positive")
    connector = aiohttp.TCPConnector(limit=max(levels), keepalive_timeout=KEEPALIVE_S)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    # trust_env stays off: a benchmark talks to the URL it is given, not through a proxy.
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, read_bufsize=2**20
    ) as session:
        target = Target(
            session,
            spec.endpoint_url,
            spec.body(),
            spec.request_headers(),
            chat=spec.endpoint == "chat",
        )
        results = []
        for level in levels:
            level_spec = dataclasses.replace(spec, concurrency=level)
            results.append(await _measure(target, level_spec, progress))
        return results


async def _measure(target: Target, spec: LoadSpec, progress: ProgressCallback | None) -> LoadResult:
    if spec.warmup:
        await _drive(target, spec.concurrency, spec.warmup, None, [])
    outcomes: list[Outcome] = []
    total = None if spec.duration_s is not None else spec.requests or DEFAULT_REQUESTS
    start = time.perf_counter()
    deadline = None if spec.duration_s is None else start + spec.duration_s

    def report() -> None:
        if progress is not None:
            errors = sum(1 for o in outcomes if not o.ok)
            elapsed = time.perf_counter() - start
            progress(
                LoadProgress(
                    spec.concurrency, len(outcomes), errors, elapsed, total, spec.duration_s
                )
            )

    async def tick() -> None:
        while True:
            report()
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    ticker = asyncio.create_task(tick()) if progress is not None else None
    try:
        await _drive(target, spec.concurrency, total, deadline, outcomes)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    wall = time.perf_counter() - start
    report()
    return _summarise(spec, outcomes, wall)


async def _drive(
    target: Target,
    concurrency: int,
    total: int | None,
    deadline: float | None,
    outcomes: list[Outcome],
) -> None:
    """Keep `concurrency` requests in flight until `total` have been sent or `deadline` passed."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while True:
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            elif deadline is not None and time.perf_counter() >= deadline:
                return
            outcomes.append(await target.send())

    workers = concurrency if total is None else min(concurrency, total)
    await asyncio.gather(*(worker() for _ in range(workers)))


def _summarise(spec: LoadSpec, outcomes: Sequence[Outcome], wall: float) -> LoadResult:
    good = [o for o in outcomes if o.ok]
    messages: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.error is None:
            continue
        if outcome.error in messages or len(messages) < ERROR_KINDS_KEPT:
            messages[outcome.error] = messages.get(outcome.error, 0) + 1
    prompt = [o.prompt_tokens for o in good if o.prompt_tokens is not None]
    from_usage = sum(o.tokens_from_usage for o in good)
    if good and from_usage == len(good):
        source = "usage"
    elif spec.stream and good:
        source = "usage and chunks" if from_usage else "chunks"
    else:
        source = "usage, for some answers" if from_usage else "none"
    return LoadResult(
        concurrency=spec.concurrency,
        stream=spec.stream,
        requests=len(outcomes),
        errors=len(outcomes) - len(good),
        duration_s=wall,
        output_tokens=sum(o.output_tokens for o in good),
        prompt_tokens=sum(prompt) / len(prompt) if prompt else None,
        tokens_counted_from=source,
        latencies_s=[o.latency_s for o in good],
        ttfts_s=[o.ttft_s for o in good if o.ttft_s is not None],
        error_messages=messages,
    )
