"""/v1/embeddings and /v1/rerank through a real `hearth serve` with the transformers worker:
the real all-MiniLM-L6-v2 model for embeddings and (as its bi-encoder fallback) reranking, and a
tiny random-weight Llama for chat through the same worker; with the `openai` SDK."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest

from support.hearth_server import HearthServer, StartHearth
from support.hf_models import minilm_dir, write_tiny_chat_model

pytest.importorskip("sentence_transformers", reason="needs the hearth-gateway[transformers] extra")

EMBED, RERANK, CHAT = "minilm", "minilm-rerank", "tiny-chat"


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> HearthServer:
    root = tmp_path_factory.mktemp("hf-models")
    chat_dir = write_tiny_chat_model(root / "tiny-chat")
    config = root / "hearth.yaml"
    config.write_text(
        "preload: []\n"
        "models:\n"
        f"  {EMBED}:\n    model: {minilm_dir()}\n    threads: 1\n"
        f"  {RERANK}:\n    model: {minilm_dir()}\n    task: rerank\n    threads: 1\n"
        f"  {CHAT}:\n    model: {chat_dir}\n    engine: transformers\n    threads: 1\n"
    )
    return start_hearth("--config", str(config))


def vectors(server: HearthServer, texts: list[str]) -> np.ndarray:
    reply = server.openai().embeddings.create(model=EMBED, input=texts, encoding_format="float")
    assert [item.index for item in reply.data] == list(range(len(texts)))
    return np.array([item.embedding for item in reply.data])


def test_embeddings_have_the_models_dimensions_and_keep_the_batch_order(
    server: HearthServer,
) -> None:
    texts = ["The cat sits on the mat.", "Stock markets fell today.", "I like green tea.", "Hi"]
    batch = vectors(server, texts)
    assert batch.shape == (4, 384)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)
    for i in (3, 0):  # one at a time, in another order: the same vectors
        assert np.allclose(vectors(server, [texts[i]])[0], batch[i], atol=1e-4)
    reply = server.openai().embeddings.create(model=EMBED, input="one string")
    assert len(reply.data) == 1
    assert reply.model == EMBED
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens


def test_paraphrases_are_closer_than_unrelated_sentences(server: HearthServer) -> None:
    a, b, unrelated = vectors(
        server,
        [
            "How do I reset my password?",
            "What are the steps to change my login password?",
            "The recipe needs two cups of flour and an egg.",
        ],
    )
    assert float(a @ b) > float(a @ unrelated) + 0.3


def test_base64_encoding_decodes_to_the_float_vectors(server: HearthServer) -> None:
    texts = ["base64 please", "and another"]
    floats = vectors(server, texts)
    # The SDK asks for base64 when no format is given, and decodes it itself.
    decoded = server.openai().embeddings.create(model=EMBED, input=texts)
    assert np.allclose(np.array([d.embedding for d in decoded.data]), floats, atol=1e-6)
    raw = httpx.post(
        f"{server.base_url}/v1/embeddings",
        json={"model": EMBED, "input": texts, "encoding_format": "base64"},
        timeout=60,
    ).json()
    first = raw["data"][0]["embedding"]
    assert isinstance(first, str)
    assert np.allclose(struct.unpack("<384f", base64.b64decode(first)), floats[0], atol=1e-6)


def test_token_arrays_and_dimensions(server: HearthServer) -> None:
    client = server.openai()
    # MiniLM's WordPiece ids for "hello world" (without [CLS]/[SEP]).
    by_ids = client.embeddings.create(model=EMBED, input=[[7592, 2088]], encoding_format="float")
    assert np.allclose(by_ids.data[0].embedding, vectors(server, ["hello world"])[0], atol=1e-4)
    assert by_ids.usage.prompt_tokens == 2
    short = client.embeddings.create(
        model=EMBED, input="shorter", dimensions=64, encoding_format="float"
    )
    assert len(short.data[0].embedding) == 64
    assert abs(float(np.linalg.norm(short.data[0].embedding)) - 1.0) < 1e-4
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBED, input="too long", dimensions=1000)
    assert "384" in caught.value.message
    assert "dimensions" in caught.value.message


def test_embedding_requests_are_validated(server: HearthServer) -> None:
    for body, param in (
        ({"model": EMBED, "input": []}, "input"),
        ({"model": EMBED, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": EMBED}, "input"),
    ):
        response = httpx.post(f"{server.base_url}/v1/embeddings", json=body, timeout=30)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param


def test_rerank_orders_the_relevant_document_first(server: HearthServer) -> None:
    documents = [
        "Bananas are rich in potassium.",
        "Paris is the capital and largest city of France.",
        "The stock market closed higher on Friday.",
        "Dogs are loyal pets.",
    ]
    response = httpx.post(
        f"{server.base_url}/v1/rerank",
        json={
            "model": RERANK,
            "query": "What is the capital of France?",
            "documents": documents,
            "top_n": 3,
            "return_documents": True,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert len(results) == 3
    assert results[0]["index"] == 1
    assert results[0]["document"] == {"text": documents[1]}
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert body["model"] == RERANK
    assert body["usage"]["prompt_tokens"] > 0
    # The alias llama.cpp serves, with Jina/Cohere's document objects.
    alias = httpx.post(
        f"{server.base_url}/rerank",
        json={
            "model": RERANK,
            "query": "pets",
            "documents": [{"text": d} for d in documents],
        },
        timeout=60,
    ).json()
    assert alias["results"][0]["index"] == 3
    assert len(alias["results"]) == 4
    assert "document" not in alias["results"][0]


def test_capability_errors_name_what_the_model_supports(server: HearthServer) -> None:
    client = server.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=EMBED, messages=[{"role": "user", "content": "hi"}])
    assert "supports: embeddings" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=CHAT, input="hi")
    assert "does not support embeddings" in caught.value.message
    assert "chat, completion" in caught.value.message
    response = httpx.post(
        f"{server.base_url}/v1/rerank",
        json={"model": EMBED, "query": "q", "documents": ["d"]},
        timeout=30,
    )
    assert response.status_code == 400
    assert "supports: embeddings" in response.json()["error"]["message"]


def test_a_chat_model_answers_through_the_transformers_worker(server: HearthServer) -> None:
    client = server.openai()
    messages = [{"role": "user", "content": "Say something."}]
    reply = client.chat.completions.create(
        model=CHAT,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
    )
    assert reply.model == CHAT
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6
    stream = client.chat.completions.create(
        model=CHAT,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content  # greedy: the same answer, streamed
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


def test_worker_models_show_in_the_model_list(server: HearthServer, tmp_path: Path) -> None:
    names = {m.id for m in server.openai().models.list().data}
    assert {EMBED, RERANK, CHAT} <= names


def test_the_ollama_client_embeds_through_hearth(server: HearthServer) -> None:
    """Ollama's /api/embed and /api/embeddings, with the real `ollama` client."""
    texts = ["The cat sits on the mat.", "A cat is sitting on a mat."]
    with ollama.Client(host=server.base_url) as client:
        reply = client.embed(model=f"{EMBED}:latest", input=texts)
        legacy = client.embeddings(model=EMBED, prompt=texts[0])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) == 384
    assert reply.prompt_eval_count and reply.total_duration
    # The same vectors the OpenAI endpoint gives, in the same order.
    assert np.allclose(np.array(reply.embeddings), vectors(server, texts), atol=1e-5)
    assert np.allclose(legacy.embedding, reply.embeddings[0], atol=1e-5)
