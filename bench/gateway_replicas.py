"""Gateway replicas: requests/s through nginx with 1, 2 and 3 `hearth serve` replicas that share
PostgreSQL (keys, usage) and Redis (rate limits), in front of a static upstream so that the
gateway is what is measured.

The static upstream is gateway_overhead.py's nginx (a fixed chat completion). Three replicas run
the whole time; one balancer nginx per replica count (1, 2 or 3 of them, fewest requests in
flight first, keep-alive) takes the load in turn, and so does the first replica on its own (what
the balancer costs). Every request carries an API key with RPM and TPM limits far above the
load, so each one runs the Redis limit script and writes a usage row, as it would in a
deployment. Writes its own section of docs/benchmarks.md (see bench/README.md); it reports, it
never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import hearth
from common import (
    DEFAULT_OUTPUT,
    HOST,
    BenchError,
    Processes,
    Server,
    machine,
    machine_line,
    markers,
    run_and_report,
)
from gateway_overhead import (
    BUSY_LOAD_PER_CORE,
    CLOCK_TICKS,
    MAX_TOKENS,
    MODEL,
    PROMPT_TOKENS,
    find_nginx,
    nginx_config,
    nginx_version,
    own_cpu_s,
    tree_cpu_s,
)
from hearth.auth.store import KeyStore
from hearth.config import Settings
from hearth.db.engine import create_engine, migrate
from hearth.engines.ports import free_port
from hearth.loadgen.load import LoadSpec, run_load

SECTION = "gateway-replicas"
MARK_START, MARK_END = markers(SECTION)
REPLICAS = 3
UNBALANCED = "1 replica, no balancer"
REFERENCE = "1 replica, no keys, Redis or PostgreSQL"
BASELINE = "nginx → 1 replica"
HIGH_LIMIT = 10**9  # RPM and TPM the load never reaches: checked on every request, never hit


def balanced(n: int) -> str:
    return f"nginx → {n} replica{'s' if n > 1 else ''}"


# -- Shared state: a database of its own, Redis -------------------------------------------------


def _admin_sql(admin_url: str, statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine(_asyncpg(admin_url), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def _asyncpg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def create_database(admin_url: str) -> str:
    """A fresh database next to `admin_url`'s; its URL."""
    name = f"hearth_bench_{uuid.uuid4().hex[:10]}"
    try:
        _admin_sql(admin_url, f"CREATE DATABASE {name}")
    except Exception as exc:
        raise BenchError(f"cannot create a database through {admin_url}: {exc}") from None
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    _admin_sql(admin_url, f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def create_key(database_url: str) -> tuple[str, str]:
    """(key id, key) of a key with RPM and TPM limits, made in a migrated database."""

    async def run() -> tuple[str, str]:
        engine = create_engine(Settings(database_url=database_url))
        try:
            await migrate(engine)
            record, key = await KeyStore(engine).create("bench", rpm=HIGH_LIMIT, tpm=HIGH_LIMIT)
            return record.id, key
        finally:
            await engine.dispose()

    return asyncio.run(run())


def service_versions(database_url: str, redis_url: str) -> dict[str, str]:
    async def pg() -> str:
        engine = create_async_engine(_asyncpg(database_url))
        try:
            async with engine.connect() as conn:
                return str((await conn.execute(text("SHOW server_version"))).scalar())
        finally:
            await engine.dispose()

    client = redis.Redis.from_url(redis_url)
    try:
        redis_version = str(client.info("server")["redis_version"])
    finally:
        client.close()
    return {"PostgreSQL": asyncio.run(pg()).split()[0], "Redis": redis_version}


def forget_counters(redis_url: str, key_id: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        for name in client.scan_iter(f"hearth:rl:key:{key_id}:*"):
            client.delete(name)
    finally:
        client.close()


# -- The processes -------------------------------------------------------------------------------


def balancer_config(root: Path, port: int, replicas: Sequence[int]) -> str:
    """nginx in the foreground, one worker, fewest requests in flight first, keep-alive to the
    replicas, no logging per request; everything under `root`."""
    servers = "\n".join(f"    server {HOST}:{p};" for p in replicas)
    temp = " ".join(
        f"{name}_temp_path {root / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process on;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  {temp}
  upstream hearth {{
    least_conn;
{servers}
    keepalive 128;
    keepalive_requests 100000000;
  }}
  server {{
    listen {HOST}:{port};
    location / {{
      proxy_pass http://hearth;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_next_upstream error timeout http_502 http_503;
    }}
  }}
}}
"""


def start_nginx(
    processes: Processes, nginx: Path, name: str, root: Path, port: int, ready_path: str
) -> Server:
    """nginx with the config already written to `root`/nginx.conf, listening on `port`."""
    conf = root / "nginx.conf"
    argv = [str(nginx), "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
    server = Server(name, argv, port, ready_path, root / "stdout.log")
    processes.start(server, 30)
    return server


def write_config(root: Path, config: str) -> None:
    root.mkdir(parents=True)
    (root / "nginx.conf").write_text(config, encoding="utf-8")


def hearth_config(
    upstream_port: int, database_url: str | None, redis_url: str | None
) -> dict[str, Any]:
    """A replica's settings; without a database and Redis, the reference one's (SQLite in its
    data folder, no keys: requests pass unchecked, usage rows are still written)."""
    shared = {"database_url": database_url, "redis_url": redis_url} if database_url else {}
    return {
        "preload": [],
        **shared,
        "deployments": {MODEL: {"url": f"http://{HOST}:{upstream_port}/json/v1", "model": MODEL}},
    }


def hearth_server(name: str, config: Path, work: Path, env: dict[str, str]) -> Server:
    port = free_port(HOST)
    folder = work / name.replace(" ", "-")
    argv = [sys.executable, "-m", "hearth", "serve", "--config", str(config)]
    argv += ["--host", HOST, "--port", str(port), "--data-dir", str(folder)]
    return Server(name, argv, port, "/ready", folder.with_suffix(".log"), env)


# -- Measuring -----------------------------------------------------------------------------------


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclass
class Target:
    name: str
    url: str  # the OpenAI base URL the load goes to
    replica_pids: list[int]  # the replicas whose CPU time counts (idle ones add ~nothing)
    balancer_pid: int | None = None


@dataclass
class Sample:
    """One timed run against one target."""

    target: str
    requests: int
    errors: int
    duration_s: float
    requests_per_s: float
    cpu_ms_per_request: dict[str, float]  # by part: replicas, balancer, upstream, generator, other
    machine_busy: float  # share of all the machine's cores that was busy
    error_messages: dict[str, int] = field(default_factory=dict)


def measured(target: Target, spec: LoadSpec, upstream_pid: int, warmup: int) -> Sample:
    if warmup:
        run_load(dataclasses.replace(spec, requests=warmup, duration_s=None))
    parts = {"replicas": target.replica_pids, "upstream": [upstream_pid]}
    if target.balancer_pid is not None:
        parts["balancer"] = [target.balancer_pid]

    def cpu() -> dict[str, float]:
        now = {name: sum(tree_cpu_s(pid) for pid in group) for name, group in parts.items()}
        return now | {"generator": own_cpu_s()}

    before, (busy0, total0) = cpu(), machine_ticks()
    result = run_load(spec)
    after, (busy1, total1) = cpu(), machine_ticks()
    used = {name: after[name] - before[name] for name in after}
    used["other"] = max(0.0, (busy1 - busy0) / CLOCK_TICKS - sum(used.values()))
    done = max(result.requests, 1)
    return Sample(
        target=target.name,
        requests=result.requests,
        errors=result.errors,
        duration_s=result.duration_s,
        requests_per_s=result.requests_per_s,
        cpu_ms_per_request={name: 1000 * seconds / done for name, seconds in used.items()},
        machine_busy=(busy1 - busy0) / max(total1 - total0, 1),
        error_messages=result.error_messages,
    )


def probe(target: Target, key: str) -> None:
    spec = LoadSpec(url=target.url, model=MODEL, api_key=key, stream=False)
    reply = httpx.post(
        spec.endpoint_url, json=spec.body(), headers=spec.request_headers(), timeout=30
    )
    if reply.status_code != 200 or "word15" not in reply.text:
        raise BenchError(f"{target.name} answered HTTP {reply.status_code}: {reply.text[:300]}")


def summary(samples: list[Sample]) -> dict[str, Any]:
    """A target's rounds: the median round's requests/s, CPU per request over all of them."""
    requests = sum(s.requests for s in samples)
    parts = samples[0].cpu_ms_per_request.keys()
    return {
        "requests_per_s": statistics.median(s.requests_per_s for s in samples),
        "rounds_requests_per_s": [round(s.requests_per_s, 1) for s in samples],
        "requests": requests,
        "errors": sum(s.errors for s in samples),
        "cpu_ms_per_request": {
            part: sum(s.cpu_ms_per_request[part] * s.requests for s in samples) / max(requests, 1)
            for part in parts
        },
        "machine_busy": statistics.median(s.machine_busy for s in samples),
        "error_messages": {m: n for s in samples for m, n in s.error_messages.items()},
    }


def benchmark(
    options: Options, console: Console, processes: Processes, work: Path
) -> dict[str, Any]:
    host = machine()  # the load average before anything starts
    nginx = find_nginx(options.nginx)
    port = free_port(HOST)
    write_config(work / "upstream", nginx_config(work / "upstream", port))
    upstream = start_nginx(
        processes, nginx, "static upstream", work / "upstream", port, "/json/v1/models"
    )
    assert upstream.proc is not None
    database = create_database(options.database_url)
    key_id = ""
    try:
        key_id, key = create_key(database)
        versions = service_versions(database, options.redis_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        configs = {}
        for name, (url, redis_url) in {
            "shared": (database, options.redis_url),
            "reference": (None, None),
        }.items():
            configs[name] = work / f"{name}.yaml"
            settings = hearth_config(upstream.port, url, redis_url)
            configs[name].write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
        replicas = [
            hearth_server(f"replica {n + 1}", configs["shared"], work, env) for n in range(REPLICAS)
        ]
        reference = hearth_server("reference", configs["reference"], work, env)
        for server in [*replicas, reference]:
            processes.start(server, options.startup_timeout)
        pids = [r.proc.pid for r in replicas if r.proc is not None]
        assert reference.proc is not None
        targets = [
            Target(UNBALANCED, f"{replicas[0].base_url}/v1", pids[:1]),
            Target(REFERENCE, f"{reference.base_url}/v1", [reference.proc.pid]),
        ]
        for n in range(1, REPLICAS + 1):
            root = work / f"balancer-{n}"
            bport = free_port(HOST)
            write_config(root, balancer_config(root, bport, [r.port for r in replicas[:n]]))
            balancer = start_nginx(processes, nginx, balanced(n), root, bport, "/health")
            assert balancer.proc is not None
            targets.append(Target(balanced(n), f"{balancer.base_url}/v1", pids, balancer.proc.pid))
        for target in targets:
            probe(target, key)

        samples: dict[str, list[Sample]] = {t.name: [] for t in targets}
        for number in range(options.rounds):
            shift = number % len(targets)
            for target in targets[shift:] + targets[:shift]:
                spec = LoadSpec(
                    url=target.url,
                    model=MODEL,
                    api_key=key,
                    stream=False,
                    concurrency=options.concurrency,
                    duration_s=options.seconds,
                    prompt_tokens=PROMPT_TOKENS,
                    max_tokens=MAX_TOKENS,
                    timeout_s=60.0,
                )
                with console.status(f"{target.name}, round {number + 1} of {options.rounds}"):
                    sample = measured(target, spec, upstream.proc.pid, options.warmup)
                samples[target.name].append(sample)
                console.print(
                    f"{target.name:<24} {sample.requests_per_s:8.1f} req/s  "
                    f"{sample.errors} errors  machine {sample.machine_busy:.0%} busy",
                    highlight=False,
                )
    finally:
        processes.stop_all()  # before the database goes
        drop_database(options.database_url, database)
        if key_id:
            forget_counters(options.redis_url, key_id)

    versions = {
        "Hearth": hearth.__version__,
        "nginx": nginx_version(nginx),
        **versions,
        "aiohttp (load)": importlib.metadata.version("aiohttp"),
    }
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": host,
            "versions": versions,
            "python": platform.python_version(),
            "command": shlex.join(["python", "bench/gateway_replicas.py", *sys.argv[1:]]),
            "options": {
                k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()
            },
            "hearth_config": hearth_config(0, "<database>", options.redis_url),
        },
        "targets": {name: summary(runs) for name, runs in samples.items()},
    }


# -- Results -------------------------------------------------------------------------------------

PARTS = ("replicas", "balancer", "upstream", "generator", "other")
TABLE_HEAD = [
    "target",
    "requests/s",
    "vs nginx → 1",
    "errors",
    "replicas",
    "nginx (balancer)",
    "upstream",
    "load generator",
    "other",
    "machine busy",
]


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    base = report["targets"][BASELINE]["requests_per_s"]
    rows = []
    for name, entry in report["targets"].items():
        cpu = entry["cpu_ms_per_request"]
        rows.append(
            [
                name,
                f"{entry['requests_per_s']:.0f}",
                f"{entry['requests_per_s'] / base:.2f}x" if base else "n/a",
                str(entry["errors"]),
                *(f"{cpu[part]:.2f}" if part in cpu else "n/a" for part in PARTS),
                f"{entry['machine_busy']:.0%}",
            ]
        )
    return rows


def limits_paragraph(report: dict[str, Any]) -> str:
    """What the figures say limits the throughput here, as Markdown bullets."""
    entries, host = report["targets"], report["meta"]["machine"]
    cores = int(host["cores"])
    load = float(host["load_average_at_start"].split()[0])
    busy = load >= BUSY_LOAD_PER_CORE * cores
    counts = range(1, REPLICAS + 1)

    def replica_cores(n: int) -> float:
        entry = entries[balanced(n)]
        return float(entry["cpu_ms_per_request"]["replicas"] * entry["requests_per_s"] / 1000)

    used = [replica_cores(n) for n in counts]
    if used[0] >= 0.9:
        one = " One replica filled its core: that was the limit with one."
    else:
        rest = "the other work, PostgreSQL and Redis" if busy else "the other parts"
        one = (
            f" One replica did not get a whole core: the rest went to {rest}, and more replicas "
            "won more of it."
        )
    cpu = entries[balanced(REPLICAS)]["cpu_ms_per_request"]
    total = sum(cpu.values())
    share = {part: cpu[part] / total for part in cpu} if total else {}
    shared, alone = (
        entries[name]["cpu_ms_per_request"]["replicas"] for name in (UNBALANCED, REFERENCE)
    )
    speed = entries[REFERENCE]["requests_per_s"] / entries[UNBALANCED]["requests_per_s"]
    others = f", and other work (load average {load:.1f} at the start)" if busy else ""

    def listed(values: list[str]) -> str:
        return ", ".join(values[:-1]) + " and " + values[-1]

    lines = [
        "**What limits it.**",
        "",
        f"- Every part shares this machine's {cores} cores: the replicas, nginx, the static "
        f"upstream, the load generator, PostgreSQL and Redis{others}. The machine was "
        + listed([f"{entries[balanced(n)]['machine_busy']:.0%}" for n in counts])
        + f" busy with {listed([str(n) for n in counts])} replicas behind nginx.",
        f"- The replicas used {listed([f'{c:.2f}' for c in used])} cores in all (their CPU "
        f"time per request x requests/s).{one} A replica is one Python process on one event "
        "loop, so it can use one core at most; once the cores are full, more replicas only add "
        "processes competing for them.",
        f"- Per request a replica spent {shared:.2f} ms of CPU with the key check, the Redis "
        f"limit checks and a usage row for PostgreSQL; the reference replica without keys, "
        f"Redis or PostgreSQL spent {alone:.2f} ms and served {speed:.2f}x the requests/s.",
        f"- With {REPLICAS} replicas a request cost {total:.2f} ms of CPU on the whole machine: "
        f"the replicas {share.get('replicas', 0):.0%}, the load generator "
        f"{share.get('generator', 0):.0%}, nginx as balancer {share.get('balancer', 0):.0%}, "
        f"the upstream {share.get('upstream', 0):.0%}, and {share.get('other', 0):.0%} "
        "elsewhere (PostgreSQL and Redis for each request's usage row and limit check, the "
        f"kernel{', the other work' if busy else ''}).",
    ]
    if busy:
        lines.append(
            "- With other work running, the gains from more replicas are overstated: under "
            "Linux's fair scheduler each more process takes a larger share of the cores from "
            "that work. On a quiet machine expect less than these ratios from the third replica."
        )
    lines.append(
        f"- These are the limits of a {cores}-core box that holds every part at once, not of "
        "the replicas; how far replicas scale on machines of their own (until PostgreSQL, "
        "Redis or the balancer runs out) is not measured here."
    )
    return "\n".join(lines)


def markdown_section(report: dict[str, Any]) -> str:
    meta, options = report["meta"], report["meta"]["options"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    lines = [
        MARK_START,
        "## Gateway replicas behind nginx",
        "",
        f"- **Date:** {meta['date']}, `bench/gateway_replicas.py` (see "
        "[bench/README.md](../bench/README.md)); rerunning it replaces this section.",
        machine_line(meta["machine"]),
        f"- **Versions:** {versions}, Python {meta['python']}",
        f"- **Command:** `{meta['command']}`",
    ]
    if options["quick"]:
        lines.append("- **--quick:** short runs; a smoke test, not a result.")
    busy = float(meta["machine"]["load_average_at_start"].split()[0])
    if busy >= BUSY_LOAD_PER_CORE * int(meta["machine"]["cores"]):
        lines.append(
            f"- **Busy machine:** other work was running (load average {busy:.1f} at the "
            "start); it shows in *other* below, and a rerun on a quiet machine is worth more."
        )
    lines += [
        "",
        f"**Method.** {REPLICAS} `hearth serve` replicas share one PostgreSQL database (keys, "
        "usage rows) and Redis (rate limits) and send to one static upstream (nginx answering "
        "a fixed chat completion, as in the gateway benchmark), so the gateway is what is "
        "measured. Every request carries an API key whose RPM and TPM limits the load never "
        "reaches: each one runs the shared limit check in Redis and writes a usage row. One "
        "nginx balancer per replica count (one worker, `least_conn`, keep-alive to the replicas) "
        "takes the load in turn, and so do the first replica without a balancer and, for "
        "reference, a fourth replica with no keys, no Redis and SQLite in its data folder. Load: "
        f"`hearth.loadgen.load` (aiohttp), non-streamed, concurrency {options['concurrency']}, "
        f"{options['rounds']} rounds of {options['seconds']:g} s per target (after "
        f"{options['warmup']} requests not timed), the targets' order rotated every round; "
        "requests/s is the median round's. CPU per request is each part's utime + stime over "
        "the runs divided by their requests (`/proc`); *other* is the rest of the machine's "
        "busy time (`/proc/stat`) and *machine busy* the share of all cores in use.",
        "",
        "| " + " | ".join(TABLE_HEAD[:4]) + " | CPU ms/request: "
        + " | ".join(TABLE_HEAD[4:-1]) + " | " + TABLE_HEAD[-1] + " |",
        "|---|" + "---:|" * (len(TABLE_HEAD) - 1),
        *("| " + " | ".join(cells) + " |" for cells in table_rows(report)),
        "",
        limits_paragraph(report),
        MARK_END,
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def show(console: Console, report: dict[str, Any]) -> None:
    view = Table(title="requests/s through nginx with 1, 2 and 3 replicas")
    for head in TABLE_HEAD:
        view.add_column(head, justify="left" if head == "target" else "right")
    for cells in table_rows(report):
        view.add_row(*cells)
    console.print(view)
    console.print(limits_paragraph(report), highlight=False)


# -- Command line --------------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool
    seconds: float
    rounds: int
    concurrency: int
    warmup: int
    database_url: str
    redis_url: str
    nginx: Path | None
    startup_timeout: float
    output: Path
    json: Path | None


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/gateway_replicas.py",
        description="Requests/s through nginx with 1, 2 and 3 Hearth replicas sharing "
        "PostgreSQL and Redis, in front of a static upstream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="1 round of 3 s: a smoke test")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each timed run")
    p.add_argument("--rounds", type=int, default=3, help="timed runs per target")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests before each run")
    p.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL database to connect to; a fresh one is created next to it and dropped",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="the shared Redis")
    p.add_argument("--nginx", type=Path, help="nginx binary (default: PATH, then /usr/sbin)")
    p.add_argument("--startup-timeout", type=float, default=120.0, help="seconds per replica")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to update")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    ns = p.parse_args(argv)
    if ns.quick:
        ns.seconds, ns.rounds, ns.warmup = min(ns.seconds, 3.0), 1, min(ns.warmup, 64)
    for name in ("seconds", "rounds", "concurrency"):
        if getattr(ns, name) <= 0:
            p.error(f"--{name} must be positive")
    return Options(**vars(ns))


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    return run_and_report(
        console,
        section=SECTION,
        output=options.output,
        json_path=options.json,
        measure=lambda processes, work: benchmark(options, console, processes, work),
        show=show,
        markdown=markdown_section,
    )


if __name__ == "__main__":
    sys.exit(main())
