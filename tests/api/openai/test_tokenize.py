"""POST /tokenize and /detokenize (and under /v1/) through a real `hearth serve`: llama.cpp's and
vLLM's shapes answered by the real engine, bad input refused with a 400 naming the field, a remote
model refused plainly, and a key's model restriction applied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.access import ADMIN_KEY, create_key
from support.hearth_server import HearthServer, StartHearth
from support.scripted_upstream import ScriptedUpstream

MODEL = "gemma-3-270m"
Gateway = tuple[HearthServer, dict[str, str], dict[str, str]]  # server, key, admin key
TEXT = "The quick brown fox jumps over the lazy dog. Ünïcödé, 日本語 and emoji 🦊."


def post(server: HearthServer, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=180, **kw)


def tokenize(server: HearthServer, **body: Any) -> dict[str, Any]:
    answer = post(server, "/tokenize", {"model": MODEL, **body})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_text_to_ids_and_back_in_llama_cpp_shape(hearth: HearthServer) -> None:
    answer = tokenize(hearth, content=TEXT)
    tokens = answer["tokens"]
    assert tokens and all(isinstance(token, int) for token in tokens)
    assert answer["count"] == len(tokens)
    assert isinstance(answer["max_model_len"], int) and answer["max_model_len"] >= 256
    back = post(hearth, "/detokenize", {"model": MODEL, "tokens": tokens})
    assert back.status_code == 200, back.text
    assert back.json()["content"] == TEXT


def test_the_v1_paths_answer_the_same(hearth: HearthServer) -> None:
    plain = tokenize(hearth, content=TEXT)
    under_v1 = post(hearth, "/v1/tokenize", {"model": MODEL, "content": TEXT})
    assert under_v1.status_code == 200 and under_v1.json() == plain
    back = post(hearth, "/v1/detokenize", {"model": MODEL, "tokens": plain["tokens"]})
    assert back.status_code == 200 and back.json()["content"] == TEXT


def test_vllm_shape_prompt_adds_the_bos_token(hearth: HearthServer) -> None:
    """vLLM's `prompt` adds special tokens by default, llama.cpp's `content` does not."""
    bare = tokenize(hearth, content=TEXT)["tokens"]
    vllm = tokenize(hearth, prompt=TEXT)
    assert vllm["count"] == len(bare) + 1 and vllm["tokens"][1:] == bare
    assert tokenize(hearth, prompt=TEXT, add_special_tokens=False)["tokens"] == bare
    assert tokenize(hearth, content=TEXT, add_special=True)["tokens"] == vllm["tokens"]
    back = post(hearth, "/detokenize", {"model": MODEL, "tokens": bare})
    assert back.json()["prompt"] == TEXT  # vLLM's name for the text


def test_pieces_spell_the_text(hearth: HearthServer) -> None:
    ids = tokenize(hearth, content="Hello world")["tokens"]
    pieces = tokenize(hearth, content="Hello world", with_pieces=True)["tokens"]
    assert [piece["id"] for piece in pieces] == ids
    assert "".join(piece["piece"] for piece in pieces) == "Hello world"


def test_messages_count_as_a_chat_requests_prompt(hearth: HearthServer) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Describe the sea in one sentence, please."},
    ]
    counted = tokenize(hearth, messages=messages)
    reply = hearth.openai().chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=1,
    )
    assert reply.usage is not None
    assert counted["count"] == reply.usage.prompt_tokens
    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
    with_tools = tokenize(hearth, messages=messages, tools=[weather])
    assert with_tools["count"] > counted["count"]  # the template renders the tool
    text = post(hearth, "/detokenize", {"model": MODEL, "tokens": counted["tokens"]}).json()
    assert "Describe the sea" in text["content"]


def test_an_empty_text_has_no_tokens(hearth: HearthServer) -> None:
    assert tokenize(hearth, content="")["tokens"] == []
    back = post(hearth, "/detokenize", {"model": MODEL, "tokens": []})
    assert back.status_code == 200 and back.json()["content"] == ""


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/tokenize", {"content": "hi"}, "model"),
        ("/tokenize", {"model": MODEL}, "exactly one of"),
        ("/tokenize", {"model": MODEL, "content": "a", "prompt": "b"}, "exactly one of"),
        ("/tokenize", {"model": MODEL, "content": 7}, "content"),
        ("/tokenize", {"model": MODEL, "content": "x" * 1_000_001}, "content"),
        ("/tokenize", {"model": MODEL, "messages": []}, "messages"),
        ("/tokenize", {"model": MODEL, "messages": [{"role": "oracle", "content": "x"}]},
         "messages[0].role"),
        ("/tokenize", {"model": MODEL, "content": "a", "with_pieces": "yes"}, "with_pieces"),
        ("/tokenize", {"model": MODEL, "content": "a", "add_special": True,
                       "add_special_tokens": False}, "disagree"),
        ("/detokenize", {"model": MODEL}, "tokens"),
        ("/detokenize", {"model": MODEL, "tokens": "12"}, "tokens"),
        ("/detokenize", {"model": MODEL, "tokens": [1, -1]}, "tokens[1]"),
        ("/detokenize", {"model": MODEL, "tokens": [1.5]}, "tokens[0]"),
        ("/detokenize", {"model": MODEL, "tokens": ["1"]}, "tokens[0]"),
        ("/detokenize", {"model": MODEL, "tokens": [True]}, "tokens[0]"),
        ("/detokenize", {"model": MODEL, "tokens": [2**31]}, "tokens[0]"),
        ("/detokenize", {"model": MODEL, "tokens": [2, 10**30]}, "tokens[1]"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_field(
    hearth: HearthServer, path: str, body: dict[str, Any], field: str
) -> None:
    answer = post(hearth, path, body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert field in error["message"], error


def test_an_id_past_the_vocabulary_is_a_400_not_an_engine_error(hearth: HearthServer) -> None:
    """llama-server answers an unknown id with a 500; Hearth checks the model's vocabulary."""
    answer = post(hearth, "/detokenize", {"model": MODEL, "tokens": [2, 262_144 * 8]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "tokens[1]" and "is not a token of the model" in error["message"]


def test_an_unknown_model_is_a_404(hearth: HearthServer) -> None:
    for path, body in (("/tokenize", {"content": "hi"}), ("/detokenize", {"tokens": [1]})):
        answer = post(hearth, path, {"model": "no-such-model", **body})
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "model_not_found"


@pytest.fixture(scope="module")
def gateway(
    start_hearth: StartHearth, upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """Keys on, a remote deployment `cloud`, and a key restricted to it."""
    folder = tmp_path_factory.mktemp("tokenize")
    db_url = f"sqlite:///{folder / 'keys.db'}"
    config = folder / "hearth.yaml"
    config.write_text(
        f"preload: []\ndatabase_url: '{db_url}'\n"
        "auth: {admin_key: env:TEST_ADMIN_KEY, refresh_interval: 0.5}\n"
        "routing: {health_check_interval: 0}\n"
        f"deployments:\n  cloud: {{url: '{upstream.url('cloud')}'}}\n"
    )
    _, key = create_key(db_url, "cloud-only", models=["cloud"])
    server = start_hearth("--config", str(config), env={"TEST_ADMIN_KEY": ADMIN_KEY})
    yield server, {"authorization": f"Bearer {key}"}, {"authorization": f"Bearer {ADMIN_KEY}"}


def test_a_remote_model_cannot_tokenize_and_says_so(gateway: Gateway) -> None:
    server, key, _ = gateway
    for path, body in (("/tokenize", {"content": "hi"}), ("/v1/detokenize", {"tokens": [1]})):
        answer = post(server, path, {"model": "cloud", **body}, headers=key)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == "model" and "cannot tokenize" in error["message"]


def test_a_key_tokenizes_only_on_its_models(gateway: Gateway) -> None:
    server, key, admin = gateway
    for path, body in (("/tokenize", {"content": "hi"}), ("/detokenize", {"tokens": [1]})):
        answer = post(server, path, {"model": MODEL, **body}, headers=key)
        assert answer.status_code == 404, answer.text
        assert MODEL not in answer.json()["error"]["message"].split("Available")[1]
        assert post(server, path, {"model": MODEL, **body}).status_code == 401  # no key
    loaded = httpx.get(f"{server.base_url}/admin/models/loaded", headers=admin, timeout=10)
    assert MODEL not in [model["name"] for model in loaded.json()["data"]]
    # The admin key may: the model is loaded for it.
    answer = post(server, "/tokenize", {"model": MODEL, "content": "hi"}, headers=admin)
    assert answer.status_code == 200 and answer.json()["count"] >= 1, answer.text
