"""/v1/embeddings from the bundled embeddings model, all-minilm-l6-v2: the all-MiniLM-L6-v2
weights written as a BERT GGUF at set-up, served by llama-server with --embedding and mean
pooling, loaded on first use, and reachable under an OpenAI name that the settings add as an
alias. It gives the vectors sentence-transformers gives in-process."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from support.hearth_server import HearthServer, StartHearth
from support.hf_models import minilm_dir

MODEL = "all-minilm-l6-v2"
ALIAS = "text-embedding-3-small"
TEXTS = ["How do I reset my password?", "The recipe needs two cups of flour.", "hello world"]


@pytest.fixture(scope="module")
def server(start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory) -> HearthServer:
    config = tmp_path_factory.mktemp("embeddings-config") / "hearth.yaml"
    config.write_text(
        f"preload: []\nmodels:\n  {MODEL}:\n    model: {MODEL}\n    aliases: [{ALIAS}]\n"
    )
    return start_hearth("--config", str(config))


def unit_rows(vectors: list[list[float]]) -> np.ndarray:
    rows = np.array(vectors)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_listed_with_its_alias_and_loaded_on_first_use(server: HearthServer) -> None:
    cards = {card.id: card for card in server.openai().models.list().data}
    assert cards[MODEL].model_extra["capabilities"] == ["embeddings"]  # type: ignore[index]
    assert cards[MODEL].model_extra["state"] == "not_loaded"  # type: ignore[index]
    assert cards[ALIAS].model_extra["alias_of"] == MODEL  # type: ignore[index]
    reply = server.openai().embeddings.create(model=ALIAS, input="hello", encoding_format="float")
    assert len(reply.data[0].embedding) == 384
    assert server.openai().models.retrieve(MODEL).model_extra["state"] == "ready"  # type: ignore[index]


def test_a_paraphrase_ranks_above_an_unrelated_sentence(server: HearthServer) -> None:
    sentences = [
        "How can I change my password?",
        "What are the steps to reset my login password?",
        "The cat slept on the warm windowsill all afternoon.",
    ]
    reply = server.openai().embeddings.create(model=MODEL, input=sentences)  # base64 on the wire
    assert [item.index for item in reply.data] == [0, 1, 2]
    query, paraphrase, unrelated = unit_rows([item.embedding for item in reply.data])
    assert query.shape == (384,)
    assert query @ paraphrase > 0.7
    assert query @ paraphrase > query @ unrelated + 0.4


def test_the_vectors_are_sentence_transformers_own(server: HearthServer) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reply = server.openai().embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    served = unit_rows([item.embedding for item in reply.data])
    assert served.shape == (3, 384)
    assert reply.usage.prompt_tokens > len(TEXTS)
    local = sentence_transformers.SentenceTransformer(str(minilm_dir()), device="cpu").encode(
        TEXTS, normalize_embeddings=True
    )
    similarity = (served * local).sum(axis=1)
    assert similarity.min() > 0.99, similarity


def test_base64_dimensions_and_chat_on_llama_cpp(server: HearthServer) -> None:
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
