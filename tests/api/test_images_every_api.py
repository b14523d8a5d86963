"""Images through every API to a local vision model: a real `hearth serve` with the tiny
Gemma-3-style vision model (support.vision_files) on llama-server with its projector, asked with
the real `openai`, `anthropic` and `ollama` clients. The model's output is noise, so what is
asserted is what the engine did: an image adds its tokens to the prompt (the usage the engine
reports, as each API shows it), answers stream back, a model that cannot see refuses images with
the capability error and a route skips to one that can, hostile images are 4xx naming the part,
and a tokens-per-minute limit counts the image's tokens."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anthropic
import httpx
import ollama
import openai
import pytest
from click.testing import CliRunner

from hearth.cli.main import cli
from support.fake_hub import FakeHub, add_vision_repo
from support.hearth_server import HearthServer, StartHearth
from support.ports import free_port
from support.tiny_models import png
from support.vision_files import TinyVLM, image_b64, image_data_url, tiny_vlm

QUESTION = "What is it?"
IMAGE_TOKENS = 16  # the tiny projector's, without the markers around them
REPO = "tiny-org/tiny-vlm-GGUF"


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> TinyVLM:
    return tiny_vlm(tmp_path_factory)


class _ImageHandler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, tuple[str, bytes]]] = {}
    # Who fetched: Hearth's fetcher, never the engine (this llama-server fetches http(s) image
    # URLs itself when handed one, which would let a request reach any address it can).
    agents: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.agents.append(self.headers.get("user-agent", ""))
        kind, data = self.files.get(self.path, ("text/plain", b"not here"))
        self.send_response(200 if self.path in self.files else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A loopback web server with a picture (and a page that is not one)."""
    _ImageHandler.files = {
        "/red.png": ("image/png", png(64, 64, (200, 30, 30))),
        "/page.html": ("image/png", b"<html>not a picture</html>"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _ImageHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def hub(vlm: TinyVLM) -> Iterator[FakeHub]:
    hub = FakeHub()
    hub.start()
    add_vision_repo(hub, REPO, vlm.text, vlm.mmproj, ("F32", "F16"))
    yield hub
    hub.stop()


def config_file(folder: Path, vlm: TinyVLM, extra: str = "") -> Path:
    config = folder / "hearth.yaml"
    config.write_text(
        "routing: {health_check_interval: 0}\n"
        # Loopback images only by this name (a literal private address stays refused), and a
        # small size limit to test it with.
        "images: {allowed_hosts: [localhost], max_bytes: 262144}\n"
        "models:\n"
        f"  seer: {{model: '{vlm.text}', mmproj: '{vlm.mmproj}', ctx_size: 8192, parallel: 2}}\n"
        f"  blind: {{model: '{vlm.text}', ctx_size: 2048, parallel: 1}}\n"
        "routes:\n"
        "  either: {deployments: [blind, seer]}\n" + extra
    )
    return config


@pytest.fixture(scope="module")
def server(
    start_hearth: StartHearth, vlm: TinyVLM, hub: FakeHub, tmp_path_factory: pytest.TempPathFactory
) -> HearthServer:
    folder = tmp_path_factory.mktemp("vision-config")
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(folder / "hf-home")}
    return start_hearth("--config", str(config_file(folder, vlm)), env=env)


def parts(*images: str, text: str = QUESTION) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    return content + [{"type": "image_url", "image_url": {"url": url}} for url in images]


def openai_prompt_tokens(server: HearthServer, content: Any, model: str = "seer") -> int:
    answer = server.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=2
    )
    assert answer.usage is not None
    return answer.usage.prompt_tokens


def refused(server: HearthServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = httpx.post(server.base_url + path, json=body, timeout=60)
    assert 400 <= response.status_code < 500, response.text
    return response.status_code, response.json()


def test_the_openai_api_sends_the_image_to_the_engine(server: HearthServer) -> None:
    text = openai_prompt_tokens(server, parts())
    one = openai_prompt_tokens(server, parts(image_data_url()))
    two = openai_prompt_tokens(server, parts(image_data_url(), image_data_url((0, 0, 255))))
    assert one >= text + IMAGE_TOKENS
    assert two - one == one - text
    # `detail` is taken (and has no meaning to this engine).
    detailed = [{"type": "text", "text": QUESTION}]
    detailed.append({"type": "image_url", "image_url": {"url": image_data_url(), "detail": "low"}})
    assert openai_prompt_tokens(server, detailed) == one
    # Streamed, with the usage at the end.
    stream = server.openai().chat.completions.create(
        model="seer",
        messages=[{"role": "user", "content": parts(image_data_url())}],  # type: ignore[misc]
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == one and usage.completion_tokens >= 1


def test_an_image_by_url_is_fetched_for_the_engine(server: HearthServer, image_server: str) -> None:
    inline = openai_prompt_tokens(server, parts(image_data_url()))
    assert openai_prompt_tokens(server, parts(f"http://{image_server}/red.png")) == inline
    assert _ImageHandler.agents and set(_ImageHandler.agents) == {"Hearth image fetcher"}
    # A literal loopback address is not a name the settings allow.
    status, body = refused(
        server,
        "/v1/chat/completions",
        {
            "model": "seer",
            "messages": [{"role": "user", "content": parts("http://127.0.0.1:1/red.png")}],
        },
    )
    assert status == 400 and body["error"]["param"] == "messages[0].content[1].image_url.url"
    assert "not a public address" in body["error"]["message"]
    status, body = refused(
        server,
        "/v1/chat/completions",
        {
            "model": "seer",
            "messages": [{"role": "user", "content": parts(f"http://{image_server}/page.html")}],
        },
    )
    assert "not a PNG, JPEG, GIF, WebP or BMP image" in body["error"]["message"]


def test_the_responses_api_sends_input_image(server: HearthServer) -> None:
    client = server.openai()

    def input_tokens(*images: str) -> int:
        content: list[dict[str, Any]] = [{"type": "input_text", "text": QUESTION}]
        content += [{"type": "input_image", "image_url": url} for url in images]
        done = client.responses.create(
            model="seer",
            input=[{"role": "user", "content": content}],  # type: ignore[list-item]
            max_output_tokens=2,
            store=False,
        )
        assert done.usage is not None
        return done.usage.input_tokens

    seen = input_tokens(image_data_url())
    assert seen >= input_tokens() + IMAGE_TOKENS
    events = list(
        client.responses.create(
            model="seer",
            input=[{"role": "user", "content": [  # type: ignore[list-item]
                {"type": "input_text", "text": QUESTION},
                {"type": "input_image", "image_url": image_data_url(), "detail": "auto"},
            ]}],
            max_output_tokens=4,
            stream=True,
            store=False,
        )
    )  # fmt: skip
    last = events[-1]  # incomplete: it stopped at max_output_tokens
    assert last.type in ("response.completed", "response.incomplete")
    assert last.response.usage is not None and last.response.usage.input_tokens == seen  # type: ignore[union-attr]


def test_the_anthropic_api_sends_image_blocks(server: HearthServer, image_server: str) -> None:
    client = anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)

    def input_tokens(*blocks: dict[str, Any]) -> int:
        done = client.messages.create(
            model="seer",
            max_tokens=2,
            messages=[{"role": "user", "content": [*blocks, {"type": "text", "text": QUESTION}]}],  # type: ignore[list-item]
        )
        return done.usage.input_tokens

    base64_block = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": image_b64()},
    }
    url_block = {
        "type": "image",
        "source": {"type": "url", "url": f"http://{image_server}/red.png"},
    }
    text = input_tokens()
    assert input_tokens(base64_block) >= text + IMAGE_TOKENS
    assert input_tokens(url_block) == input_tokens(base64_block)
    assert _ImageHandler.agents and set(_ImageHandler.agents) == {"Hearth image fetcher"}
    with client.messages.stream(
        model="seer",
        max_tokens=4,
        messages=[{"role": "user", "content": [base64_block, {"type": "text", "text": QUESTION}]}],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.input_tokens == input_tokens(base64_block)
    # Bad base64, named where the client put it, in Anthropic's error shape.
    bad = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        input_tokens(bad)
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages[0].content[0].source.data" in str(caught.value)


def test_the_ollama_api_sends_images_in_chat_and_generate(server: HearthServer) -> None:
    picture = base64.b64decode(image_b64())
    with ollama.Client(host=server.base_url, timeout=120) as client:
        text = client.chat(
            model="seer",
            messages=[{"role": "user", "content": QUESTION}],
            options={"num_predict": 2},
        )
        seen = client.chat(
            model="seer",
            messages=[{"role": "user", "content": QUESTION, "images": [picture]}],
            options={"num_predict": 2},
        )
        assert seen.prompt_eval_count is not None and text.prompt_eval_count is not None
        assert seen.prompt_eval_count >= text.prompt_eval_count + IMAGE_TOKENS
        generated = client.generate(
            model="seer", prompt=QUESTION, images=[picture], options={"num_predict": 2}
        )
        plain = client.generate(model="seer", prompt=QUESTION, options={"num_predict": 2})
        assert generated.prompt_eval_count is not None and plain.prompt_eval_count is not None
        assert generated.prompt_eval_count >= plain.prompt_eval_count + IMAGE_TOKENS
        streamed = list(
            client.chat(
                model="seer",
                messages=[{"role": "user", "content": QUESTION, "images": [picture]}],
                options={"num_predict": 4},
                stream=True,
            )
        )
        assert streamed[-1].done and streamed[-1].prompt_eval_count == seen.prompt_eval_count
        with pytest.raises(ollama.ResponseError) as caught:
            client.chat(
                model="seer",
                messages=[{"role": "user", "content": QUESTION, "images": ["bm90IGFuIGltYWdl"]}],
            )
    assert caught.value.status_code == 400
    assert "messages[0].images[0]" in caught.value.error
    assert "not a PNG, JPEG, GIF, WebP or BMP image" in caught.value.error


def test_vision_is_listed_where_models_are(server: HearthServer) -> None:
    models = {m.id: m.model_extra or {} for m in server.openai().models.list()}
    assert "vision" in models["seer"]["capabilities"]
    assert "vision" not in models["blind"]["capabilities"]
    assert "vision" in models["either"]["capabilities"]  # one of its deployments sees
    with ollama.Client(host=server.base_url) as client:
        assert "vision" in (client.show("seer").capabilities or [])
        assert "vision" not in (client.show("blind").capabilities or [])


def test_a_model_without_vision_refuses_images_in_each_apis_shape(server: HearthServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_prompt_tokens(server, parts(image_data_url()), model="blind")
    assert "does not accept images" in caught.value.message
    _, body = refused(
        server,
        "/v1/messages",
        {
            "model": "blind",
            "max_tokens": 2,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": image_b64(),
                            },
                        }
                    ],
                }
            ],
        },
    )
    assert body["type"] == "error" and "does not accept images" in body["error"]["message"]
    _, body = refused(
        server,
        "/api/chat",
        {
            "model": "blind",
            "stream": False,
            "messages": [{"role": "user", "content": "?", "images": [image_b64()]}],
        },
    )
    assert "does not accept images" in body["error"]


def test_a_route_skips_to_a_deployment_that_can_see(server: HearthServer) -> None:
    client = server.openai()
    seen = client.chat.completions.with_raw_response.create(
        model="either",
        messages=[{"role": "user", "content": parts(image_data_url())}],
        max_tokens=2,  # type: ignore[misc]
    )
    assert seen.headers["x-hearth-deployment"] == "seer"
    text = client.chat.completions.with_raw_response.create(
        model="either", messages=[{"role": "user", "content": QUESTION}], max_tokens=2
    )
    assert text.headers["x-hearth-deployment"] == "blind"


def test_hostile_images_are_4xx_naming_the_part_and_the_server_stays_healthy(
    server: HearthServer,
) -> None:
    def chat(*urls: str) -> tuple[int, dict[str, Any]]:
        return refused(
            server,
            "/v1/chat/completions",
            {"model": "seer", "messages": [{"role": "user", "content": parts(*urls)}]},
        )

    where = "messages[0].content[1].image_url.url"
    cases = {
        "data:image/png;base64,!!!not-base64!!!": "not valid base64",
        "data:image/png;base64," + base64.b64encode(b"plain text, no image").decode(): "not a PNG",
        # Over images.max_bytes (256 KiB here): a PNG signature and then padding.
        "data:image/png;base64,"
        + base64.b64encode(png(2, 2, (1, 2, 3)) + b"\0" * 300_000).decode(): "larger than",
    }
    for url, reason in cases.items():
        status, body = chat(url)
        assert status == 400, body
        assert body["error"]["param"] == where and reason in body["error"]["message"]
    # 101 images: past the documented limit of 100 a request.
    tiny = "data:image/png;base64," + base64.b64encode(png(1, 1, (0, 0, 0))).decode()
    status, body = chat(*([tiny] * 101))
    assert status == 400 and "messages[0].content[101] is image 101" in body["error"]["message"]
    assert "at most 100 images" in body["error"]["message"]
    # A 50 MB data URL: past the request size limit, refused before it is read.
    huge = "data:image/png;base64," + "A" * (50 * 1024 * 1024)
    response = httpx.post(
        server.base_url + "/v1/chat/completions",
        content=json.dumps(
            {"model": "seer", "messages": [{"role": "user", "content": parts(huge)}]}
        ),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
    assert openai_prompt_tokens(server, parts(image_data_url())) > 0


def test_a_vision_model_pulled_through_ollamas_api_sees(server: HearthServer, hub: FakeHub) -> None:
    with ollama.Client(host=server.base_url, timeout=120) as client:
        client.pull(f"hf.co/{REPO}:F16")
        name = f"hf.co/{REPO}:F16"
        assert "vision" in (client.show(name).capabilities or [])
        text = client.chat(
            model=name, messages=[{"role": "user", "content": QUESTION}], options={"num_predict": 2}
        )
        seen = client.chat(
            model=name,
            messages=[
                {"role": "user", "content": QUESTION, "images": [base64.b64decode(image_b64())]}
            ],
            options={"num_predict": 2},
        )
    assert seen.prompt_eval_count >= (text.prompt_eval_count or 0) + IMAGE_TOKENS  # type: ignore[operator]
    assert hub.downloads_of("mmproj-F16.gguf") == 1 and hub.downloads_of("mmproj-F32.gguf") == 0


def test_a_tokens_per_minute_limit_counts_the_images_tokens(
    start_hearth: StartHearth, vlm: TinyVLM, tmp_path: Path, server: HearthServer
) -> None:
    text = openai_prompt_tokens(server, parts()) + 1  # and the one token generated
    image = openai_prompt_tokens(server, parts(image_data_url())) + 1
    limit = text + 1 + (image - text) // 2  # two text requests fit; one with an image does not
    assert text < limit <= image
    limited = start_hearth(
        "--config", str(config_file(tmp_path, vlm, "auth: {refresh_interval: 0.2}\n"))
    )

    def key(name: str) -> str:
        created = CliRunner().invoke(
            cli,
            [
                "keys",
                "create",
                "--name",
                name,
                "--tpm",
                str(limit),
                "--data-dir",
                str(limited.data_dir),
            ],
        )
        assert created.exit_code == 0, created.output
        return created.stdout.strip().splitlines()[-1]

    texts, images = key("texts"), key("images")

    def ask(key: str, content: Any) -> int:
        response = httpx.post(
            limited.base_url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={
                "model": "seer",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 1,
            },
            timeout=60,
        )
        return response.status_code

    deadline = time.monotonic() + 20
    while ask(texts, parts()) != 200:  # keys reach the server at its next refresh
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(0.3)  # tokens are counted as the answer ends
    assert ask(texts, parts()) == 200
    assert ask(images, parts(image_data_url())) == 200
    time.sleep(0.3)
    assert ask(images, parts()) == 429
