"""The llama-server command line, and the real engine formatting chats with the bundled template."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hearth.config import EngineSettings
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher, bundled_template
from hearth.engines.ports import free_port
from hearth.engines.process import EngineProcess
from hearth.models.bundled import bundled_model_path


def launcher(binary: Path, model: Path, **engine: object) -> LlamaServerLauncher:
    return LlamaServerLauncher(
        binary=binary,
        model_path=model,
        alias="gemma-3-270m",
        settings=EngineSettings.model_validate(engine),
        chat_template_file=bundled_template("gemma3"),
    )


def test_command_line_uses_jinja_with_a_template_file_never_a_bare_name(tmp_path: Path) -> None:
    argv = (
        launcher(tmp_path / "llama-server", tmp_path / "m.gguf", parallel=4)
        .command("127.0.0.1", 5555)
        .argv
    )
    assert argv[argv.index("--port") + 1] == "5555"
    assert argv[argv.index("--parallel") + 1] == "4"
    assert argv[argv.index("--alias") + 1] == "gemma-3-270m"
    template = Path(argv[argv.index("--chat-template-file") + 1])
    assert template.is_file() and "<start_of_turn>" in template.read_text()
    assert "--jinja" in argv
    assert "--chat-template" not in argv  # would be read as the template text itself


def test_optional_flags_only_when_set(tmp_path: Path) -> None:
    plain = launcher(tmp_path / "ls", tmp_path / "m").command("127.0.0.1", 1).argv
    assert "--threads" not in plain and "--gpu-layers" not in plain
    tuned = (
        launcher(tmp_path / "ls", tmp_path / "m", threads=3, gpu_layers=99, extra_args=["--mlock"])
        .command("127.0.0.1", 1)
        .argv
    )
    assert tuned[tuned.index("--threads") + 1] == "3"
    assert tuned[tuned.index("--gpu-layers") + 1] == "99"
    assert tuned[-1] == "--mlock"


@pytest.fixture
async def engine(
    llama_server_binary: Path, bundled_model_dir: Path, tmp_path: Path
) -> AsyncIterator[str]:
    model = bundled_model_path(bundled_model_dir)
    port = free_port()
    process = EngineProcess(
        launcher(llama_server_binary, model, parallel=2, ctx_size=4096).command("127.0.0.1", port),
        "127.0.0.1",
        port,
        tmp_path / "engine.log",
    )
    await process.start()
    async with httpx.AsyncClient() as client:
        try:
            await process.wait_ready(client, timeout=120)
            yield process.base_url
        finally:
            await process.stop(grace=5)


async def test_real_engine_formats_messages_with_the_gemma_template(engine: str) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is a zebra?"},
        {"role": "assistant", "content": "A striped horse."},
        {"role": "user", "content": "And a quagga?"},
    ]
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{engine}/apply-template", json={"messages": messages})
    # The engine adds <bos> itself when it tokenizes, so the formatted prompt starts at the turn.
    assert response.json()["prompt"] == (
        "<start_of_turn>user\nYou are terse.\n\nWhat is a zebra?<end_of_turn>\n"
        "<start_of_turn>model\nA striped horse.<end_of_turn>\n"
        "<start_of_turn>user\nAnd a quagga?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


async def test_real_engine_renders_tools_and_tool_turns(engine: str) -> None:
    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    call = {"id": "1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
    messages = [
        {"role": "user", "content": "Find it."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "1", "content": "found"},
    ]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{engine}/apply-template", json={"messages": messages, "tools": [tool]}
        )
    assert response.status_code == 200, response.text
    prompt = response.json()["prompt"]
    assert prompt.startswith("<start_of_turn>user\nYou can call these functions:\n")
    assert '{"name": "lookup", "description": "", "parameters": {' in prompt
    assert '<tool_call>{"name": "lookup", "arguments": {"q": 1}}</tool_call>' in prompt
    assert "<start_of_turn>user\n<tool_response>found</tool_response><end_of_turn>" in prompt


def test_a_seed_turns_off_prompt_cache_reuse_unless_the_client_chose(tmp_path: Path) -> None:
    llama = launcher(tmp_path / "ls", tmp_path / "m")
    seeded: dict[str, object] = {"seed": 7}
    llama.prepare_request(seeded)
    assert seeded["cache_prompt"] is False
    chosen: dict[str, object] = {"seed": 7, "cache_prompt": True}
    llama.prepare_request(chosen)
    assert chosen["cache_prompt"] is True
    unseeded: dict[str, object] = {"temperature": 1}
    llama.prepare_request(unseeded)
    assert "cache_prompt" not in unseeded
