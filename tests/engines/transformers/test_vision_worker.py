"""The transformers worker serving an image-text-to-text folder: the tiny Gemma-3-style vision
model (support.tiny_models, random weights, a complete Gemma3Processor folder) as a real worker
process started from its launcher, then through a real `hearth serve` with the `openai` client.
Its words are noise, so what is asserted is what the engine did with the image: the prompt grows
by the image's tokens, answers come whole and streamed with that usage, and images it must not
take (not a data: URL, not an image, a vast canvas, a model without vision) are 400s naming why."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from hearth.engines.transformers.backends import ChatBackend, WorkerError
from hearth.engines.transformers.folder import inspect_folder
from hearth.engines.transformers.vision import VisionChatBackend
from support.hearth_server import HearthServer, StartHearth
from support.hf_models import write_tiny_chat_model
from support.tiny_models import IMAGE_SIZE, IMAGE_TOKENS_PER_IMAGE, make_tiny_gemma3_vlm, png
from support.worker_process import running_worker

pytest.importorskip("transformers", reason="needs the hearth-gateway[transformers] extra")
pytest.importorskip("PIL", reason="needs the hearth-gateway[transformers] extra")

QUESTION = "What colour is this picture?"
RED = (200, 30, 30)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gemma3_vlm(tmp_path_factory.mktemp("vlm") / "tiny-vlm", processor=True)


@pytest.fixture(scope="module")
def worker(vlm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The worker as a process (module-wide: the model loads once)."""
    log = tmp_path_factory.mktemp("worker") / "w.log"
    with running_worker(vlm_dir, "tiny-vlm", log) as base_url:
        yield base_url


def data_url(raw: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


PICTURE = data_url(png(IMAGE_SIZE, IMAGE_SIZE, RED))


def ask(*urls: str, text: str = QUESTION, **fields: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3}
    return {**body, "temperature": 0, **fields}


def claimed_canvas(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's first bytes."""
    raw = bytearray(png(1, 1, RED))
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    return bytes(raw)


def test_an_image_text_to_text_folder_is_a_chat_model_that_sees(
    vlm_dir: Path, tmp_path: Path
) -> None:
    info = inspect_folder(vlm_dir)
    assert (info.task, info.vision) == ("chat", True)
    assert info.capabilities().names() == ["chat", "completion", "vision"]
    # The same checkpoint without a chat template cannot be sent images (they come in chat).
    bare = make_tiny_gemma3_vlm(tmp_path / "bare")
    assert inspect_folder(bare).vision
    assert not inspect_folder(bare).capabilities().vision
    text_only = inspect_folder(write_tiny_chat_model(tmp_path / "llama"))
    assert (text_only.task, text_only.vision) == ("chat", False)
    assert "vision" not in text_only.capabilities().names()


async def test_an_image_adds_its_tokens_to_the_prompt(worker: str) -> None:
    async with httpx.AsyncClient(base_url=worker, timeout=120) as client:

        async def prompt_tokens(*urls: str) -> int:
            reply = await client.post("/v1/chat/completions", json=ask(*urls))
            assert reply.status_code == 200, reply.text
            usage = reply.json()["usage"]
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            return int(usage["prompt_tokens"])

        alone = await prompt_tokens()
        one = await prompt_tokens(PICTURE)
        two = await prompt_tokens(PICTURE, data_url(png(32, 48, (0, 90, 200))))
    # Each image: its soft tokens, between begin/end markers the processor adds.
    assert one - alone >= IMAGE_TOKENS_PER_IMAGE
    assert two - alone == 2 * (one - alone)


async def test_answers_come_whole_and_streamed_with_the_image_counted(worker: str) -> None:
    async with httpx.AsyncClient(base_url=worker, timeout=120) as client:
        whole = (await client.post("/v1/chat/completions", json=ask(PICTURE, seed=1))).json()
        choice = whole["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("stop", "length")
        assert 1 <= whole["usage"]["completion_tokens"] <= 3

        streamed = ask(PICTURE, stream=True, stream_options={"include_usage": True})
        pieces, usage, finish = [], None, None
        async with client.stream("POST", "/v1/chat/completions", json=streamed) as reply:
            assert reply.status_code == 200
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = httpx.Response(200, content=line[6:]).json()
                assert "error" not in chunk, chunk
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for c in chunk["choices"]:
                    pieces.append(c["delta"].get("content") or "")
                    finish = c["finish_reason"] or finish
    assert usage is not None and finish in ("stop", "length")
    assert usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    # Greedy decoding: the streamed text is the whole answer's.
    assert "".join(pieces) == choice["message"]["content"]


async def test_text_alone_chats_and_completes(worker: str) -> None:
    async with httpx.AsyncClient(base_url=worker, timeout=120) as client:
        chat = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 2}
        reply = await client.post("/v1/chat/completions", json=chat)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] <= 2
        reply = await client.post("/v1/completions", json={"prompt": "Once upon", "max_tokens": 2})
        assert reply.status_code == 200, reply.text
        assert reply.json()["object"] == "text_completion"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://example.com/cat.png", "inline only (a data: URL)"),
        ("file:///etc/passwd", "inline only (a data: URL)"),
        ("data:image/png,rawbytes", "not base64"),
        ("data:image/png;base64,@@not base64@@", "its base64 does not decode"),
        (data_url(b"GIF89a but not really a gif"), "not an image Pillow can read"),
        # 100 M pixels: past Pillow's warning (89 M), short of its own refusal (179 M).
        (data_url(claimed_canvas(10_000, 10_000)), "more pixels than Pillow decodes safely"),
    ],
)
async def test_images_it_must_not_take_are_400s_naming_the_part(
    worker: str, url: str, says: str
) -> None:
    async with httpx.AsyncClient(base_url=worker, timeout=60) as client:
        reply = await client.post("/v1/chat/completions", json=ask(PICTURE, url))
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == "messages[0].content[2].image_url.url"
    assert says in error["message"]


@pytest.mark.parametrize(
    ("content", "param"),
    [
        ([{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}], "content[0]"),
        ([{"type": "image_url", "image_url": "data:image/png;base64,"}], "content[0]"),
        (42, "content"),
    ],
)
async def test_parts_it_cannot_read_are_400s(worker: str, content: Any, param: str) -> None:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 1}
    async with httpx.AsyncClient(base_url=worker, timeout=60) as client:
        reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"].startswith(f"messages[0].{param}")


def test_the_pixels_reach_the_model(vlm_dir: Path) -> None:
    """In the worker's own process: the image goes to the model as pixel values, and the next
    token's logits depend on them."""
    import torch

    backend = VisionChatBackend(vlm_dir, "cpu", None)
    generation = backend.prepare(ask(PICTURE), chat=True)
    pixels = generation.extra_inputs["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert pixels.dtype == backend.model.dtype

    def next_token_logits(**extra: Any) -> Any:
        with torch.inference_mode():
            out = backend.model(
                input_ids=generation.input_ids, attention_mask=generation.attention_mask, **extra
            )
        return out.logits[0, -1]

    blind = {k: v for k, v in generation.extra_inputs.items() if k != "pixel_values"}
    assert not torch.allclose(
        next_token_logits(**generation.extra_inputs), next_token_logits(**blind)
    )
    assert "pixel_values" not in backend.prepare(ask(), chat=True).extra_inputs


def test_a_text_model_refuses_an_image_rather_than_drop_it(tmp_path: Path) -> None:
    backend = ChatBackend(write_tiny_chat_model(tmp_path / "llama"), "cpu", None)
    with pytest.raises(WorkerError, match="takes no images") as caught:
        backend.prepare(ask(PICTURE), chat=True)
    assert caught.value.param == "messages[0].content[1].image_url"


# Through a real `hearth serve`: the folder as a `models:` entry, asked with the openai client.


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, vlm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    blind = write_tiny_chat_model(tmp_path_factory.mktemp("blind") / "tiny-llama")
    config = tmp_path_factory.mktemp("vision-config") / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        "models:\n"
        f"  seer-hf: {{model: '{vlm_dir}', engine: transformers, threads: 1}}\n"
        f"  blind-hf: {{model: '{blind}', engine: transformers, threads: 1}}\n"
    )
    return start_hearth("--config", str(config))


def test_hearth_serves_the_folder_to_the_openai_client(server: HearthServer) -> None:
    client = server.openai()
    listed = {m.id: m for m in client.models.list().data}
    assert "vision" in (listed["seer-hf"].model_extra or {}).get("capabilities", [])

    def content(*urls: str) -> Any:
        return ask(*urls)["messages"][0]["content"]

    messages: Any = [{"role": "user", "content": content()}]
    alone = client.chat.completions.create(model="seer-hf", messages=messages, max_tokens=2)
    messages = [{"role": "user", "content": content(PICTURE)}]
    seen = client.chat.completions.create(model="seer-hf", messages=messages, max_tokens=2)
    assert alone.usage is not None and seen.usage is not None
    assert seen.usage.prompt_tokens - alone.usage.prompt_tokens >= IMAGE_TOKENS_PER_IMAGE

    stream = client.chat.completions.create(
        model="seer-hf",
        messages=messages,
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == seen.usage.prompt_tokens
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


def test_hearth_refuses_what_the_folder_cannot_see(server: HearthServer) -> None:
    client = server.openai()
    messages: Any = [{"role": "user", "content": ask(PICTURE)["messages"][0]["content"]}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="blind-hf", messages=messages, max_tokens=2)
    assert "does not accept images" in caught.value.message
    # A URL into the machine's own network is refused before any engine sees it.
    private = ask("http://127.0.0.1:9/cat.png")["messages"][0]["content"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="seer-hf", messages=[{"role": "user", "content": private}], max_tokens=2
        )
    assert "messages[0].content[1].image_url.url" in caught.value.message
