"""Starting a real engine from its launcher and checking that it answers (for engines whose
hardware only some machines have)."""

from __future__ import annotations

from pathlib import Path

import httpx

from hearth.engines.base import Launcher
from hearth.engines.ports import free_port
from hearth.engines.process import EngineProcess


async def answers_a_completion(launcher: Launcher, log_path: Path, timeout: float = 600) -> None:
    port = free_port("127.0.0.1")
    process = EngineProcess(launcher.command("127.0.0.1", port), "127.0.0.1", port, log_path)
    await process.start()
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
            await process.wait_ready(client, timeout)
            body = {"model": "tiny", "prompt": "hello", "max_tokens": 4, "temperature": 0}
            launcher.prepare_request(body)
            response = await client.post(f"{process.base_url}/v1/completions", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["text"] is not None
    finally:
        await process.stop(10)
