"""One model split across two hosts over llama.cpp's RPC protocol: `hearth rpc-worker` in one
network namespace, `hearth serve` in another, the bundled model's layers on both, and the same
greedy answer as the model on one host.

The hosts are network namespaces joined by a veth pair (support.netns): the worker can only be
reached over that link, so the layers really travel over a network interface."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import netns
from support.hearth_server import HearthServer
from support.netns import NamespacedHearth, TwoHosts

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(netns.unavailable() is not None, reason=str(netns.unavailable())),
]

SPLIT = "gemma-split"
WORKER_PORT = 50052  # the default: the worker's namespace is fresh, so nothing else has it
# Gemma 3 270M has 18 layers and an output layer: with 9 offloaded, the worker gets the output
# layer and the last 8, this host keeps the token embeddings and the first 10.
WORKER_LAYERS = 9


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    try:
        with netns.two_hosts() as made:
            yield made
    except OSError as exc:  # e.g. a container without CAP_NET_ADMIN
        pytest.skip(f"cannot create network namespaces here: {exc}")


def start_worker(hosts: TwoHosts, rpc_server: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    log_path = tmp_path / "rpc-worker.log"
    argv = hosts.worker.argv(
        sys.executable, "-m", "hearth", "rpc-worker", "--host", hosts.worker.address,
        "--port", str(WORKER_PORT), "--data-dir", str(tmp_path / "worker-data"),
    )  # fmt: skip
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HEARTH_RPC_SERVER": str(rpc_server)},
        )
    deadline = time.monotonic() + 30
    # rpc-server, the worker's child, listens in the worker's namespace: look in there.
    while not netns.listening(worker.pid, WORKER_PORT):
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the RPC worker did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    return worker


def start_hearth(hosts: TwoHosts, data_dir: Path, binary: Path) -> HearthServer:
    """Hearth on the server host, serving the bundled model twice: on its own, and split. The
    engines log at verbosity 4, where llama.cpp names the device of every buffer."""
    config = data_dir / "hearth.yaml"
    config.write_text(
        f"""
preload: [gemma-3-270m, {SPLIT}]
engine: {{parallel: 1, ctx_size: 1024, extra_args: ["--verbosity", "4"]}}
models:
  {SPLIT}:
    model: gemma-3-270m
    rpc: ["{hosts.worker.address}:{WORKER_PORT}"]
    gpu_layers: {WORKER_LAYERS}
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["HEARTH_LLAMA_SERVER"] = str(binary)
    server = NamespacedHearth(
        hosts.server, hosts.server_address_from_here, data_dir, env, ["--config", str(config)]
    )
    server.wait_ready(timeout=120)
    return server


def link_models(models_dir: Path, data_dir: Path) -> None:
    (data_dir / "models").mkdir(parents=True)
    for path in models_dir.iterdir():
        if path.is_file() and not path.name.startswith("."):
            os.link(path, data_dir / "models" / path.name)


def test_a_model_split_over_an_rpc_worker_answers_as_on_one_host(
    hosts: TwoHosts,
    tmp_path: Path,
    llama_server_binary: Path,
    rpc_server_binary: Path,
    bundled_model_dir: Path,
) -> None:
    worker = start_worker(hosts, rpc_server_binary, tmp_path)
    server: HearthServer | None = None
    try:
        data_dir = tmp_path / "server-data"
        link_models(bundled_model_dir, data_dir)
        server = start_hearth(hosts, data_dir, llama_server_binary)
        client = server.openai()

        def answer(model: str) -> tuple[str, int]:
            completion = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Write a short poem about the sea."}],
                temperature=0,
                seed=7,
                max_tokens=32,
            )
            assert completion.usage is not None
            return completion.choices[0].message.content or "", completion.usage.completion_tokens

        one_host, split = answer("gemma-3-270m"), answer(SPLIT)
        assert one_host[1] > 8 and one_host[0].strip()
        assert split == one_host

        # The split was real: the engine put a share of the weights in the worker's memory ...
        engine_log = (data_dir / "logs" / f"{SPLIT}.log").read_text()
        device = re.escape(f"RPC0[{hosts.worker.address}:{WORKER_PORT}]")
        sizes = re.findall(rf"{device} model buffer size\s*=\s*([\d.]+) MiB", engine_log)
        assert sizes and float(sizes[-1]) > 10, engine_log
        assert re.search(rf"offloaded {WORKER_LAYERS}/\d+ layers", engine_log), engine_log
        # ... and the model on one host used no worker.
        assert "RPC0" not in (data_dir / "logs" / "gemma-3-270m.log").read_text()
    finally:
        if server is not None:
            server.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait()
    worker_log = (tmp_path / "rpc-worker.log").read_text()
    assert "Accepted client connection" in worker_log, worker_log
    assert code == 0, worker_log
