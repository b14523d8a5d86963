"""/v1/embeddings served by llama.cpp from an embedding GGUF (all-MiniLM-L6-v2 written as a
BERT GGUF by the test): started with --embedding and the file's pooling, it gives the same
vectors as sentence-transformers does in-process."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from support.bert_gguf import write_minilm_gguf
from support.hearth_server import HearthServer, StartHearth
from support.hf_models import minilm_dir

MODEL = "minilm-gguf"
TEXTS = ["How do I reset my password?", "The recipe needs two cups of flour.", "hello world"]


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> HearthServer:
    root = tmp_path_factory.mktemp("gguf-embed")
    gguf_path = write_minilm_gguf(root / "minilm.gguf")
    config = root / "hearth.yaml"
    config.write_text(
        f"preload: []\nmodels:\n  {MODEL}:\n    model: {gguf_path}\n    ctx_size: 2048\n"
        "    parallel: 2\n"
    )
    return start_hearth("--config", str(config))


def test_llama_cpp_embeddings_match_sentence_transformers(server: HearthServer) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reply = server.openai().embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    served = np.array([item.embedding for item in reply.data])
    assert served.shape == (3, 384)
    assert [item.index for item in reply.data] == [0, 1, 2]
    assert reply.usage.prompt_tokens > len(TEXTS)
    local = sentence_transformers.SentenceTransformer(str(minilm_dir()), device="cpu").encode(
        TEXTS, normalize_embeddings=True
    )
    served /= np.linalg.norm(served, axis=1, keepdims=True)
    similarity = (served * local).sum(axis=1)
    assert similarity.min() > 0.99, similarity


def test_base64_and_dimensions_on_llama_cpp(server: HearthServer) -> None:
    client = server.openai()
    floats = client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    decoded = client.embeddings.create(model=MODEL, input=TEXTS[0])  # base64 on the wire
    assert np.allclose(decoded.data[0].embedding, floats.data[0].embedding, atol=1e-6)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input="x", dimensions=64)
    assert "does not support 'dimensions'" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "supports: embeddings" in caught.value.message
