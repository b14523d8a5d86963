"""Usage rows equal the requests actually served, under concurrent load and across a SIGTERM
that arrives while answers are still being generated (the buffer is flushed on shutdown)."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from support.access import ADMIN_KEY, create_key, gateway_config, query
from support.hearth_server import StartHearth
from support.scripted_upstream import ScriptedUpstream


def test_usage_totals_match_served_requests_across_sigterm(
    start_hearth: StartHearth, tmp_path: Path
) -> None:
    upstream = ScriptedUpstream().start()
    upstream.set_default("slow", "slow:1.5")
    database = f"sqlite:///{tmp_path / 'usage.db'}"
    record, key = create_key(database, "load")
    config = gateway_config(tmp_path / "hearth.yaml", upstream, database, {"fast": "", "slow": ""})
    # Long intervals: the background loop never runs, so every row arrives by the shutdown flush.
    text = config.read_text().replace("flush_interval: 0.2", "flush_interval: 30")
    config.write_text(text.replace("refresh_interval: 0.5", "refresh_interval: 30"))
    server = start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})
    served = 0
    lock = threading.Lock()

    def send(model: str, stream: bool) -> None:
        nonlocal served
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        with httpx.Client(timeout=30, headers={"authorization": f"Bearer {key}"}) as client:
            try:
                answer = client.post(f"{server.base_url}/v1/chat/completions", json=body)
                ok = answer.status_code == 200 and (not stream or "[DONE]" in answer.text)
            except httpx.HTTPError:
                ok = False
        if ok:
            with lock:
                served += 1

    try:
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(lambda i: send("fast", i % 3 == 0), range(90)))
        assert served == 90
        with ThreadPoolExecutor(8) as pool:
            pending = [pool.submit(send, "slow", i % 2 == 0) for i in range(8)]
            deadline = time.monotonic() + 20
            while upstream.hits("slow") < 8 and time.monotonic() < deadline:
                time.sleep(0.05)  # until all eight are waiting on the upstream
            server.proc.send_signal(signal.SIGTERM)
            for future in pending:
                future.result()
        # uvicorn re-raises the SIGTERM once it has shut down gracefully.
        assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        server.stop()
        upstream.stop()
    assert served == 98  # graceful shutdown let the in-flight answers finish
    rows = query(
        database,
        "SELECT count(*), sum(prompt_tokens), sum(completion_tokens) FROM usage "
        f"WHERE key_id = '{record.id}' AND status = 200",
    )
    assert tuple(rows[0]) == (served, 5 * served, 3 * served)
    assert f"usage: {served} rows written at shutdown" in server.log()
