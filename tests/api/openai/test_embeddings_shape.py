"""How Hearth shapes what engines answer: base64 vectors and rerank results, whatever engine or
remote served them (llama.cpp answers rerank unsorted, with `score` in older builds)."""

from __future__ import annotations

import base64
import struct

import pytest

from hearth.api.openai.embeddings import encode_base64
from hearth.api.openai.rerank import RerankRequest, shape_results
from hearth.errors import InvalidRequest, UpstreamError
from hearth.wire.base import parse_request
from hearth.wire.embeddings import EmbeddingRequest


def test_base64_is_little_endian_float32() -> None:
    vector = [0.5, -1.25, 3.0]
    assert struct.unpack("<3f", base64.b64decode(encode_base64(vector))) == (0.5, -1.25, 3.0)


def test_results_are_sorted_cut_to_top_n_and_carry_documents() -> None:
    engine = [
        {"index": 0, "relevance_score": 0.1},
        {"index": 2, "score": 0.9},
        {"index": 1, "relevance_score": 0.5},
    ]
    texts = ["a", "b", "c"]
    assert shape_results(engine, texts, 2, True) == [
        {"index": 2, "relevance_score": 0.9, "document": {"text": "c"}},
        {"index": 1, "relevance_score": 0.5, "document": {"text": "b"}},
    ]
    assert [r["index"] for r in shape_results(engine, texts, None, False)] == [2, 1, 0]


@pytest.mark.parametrize(
    "results", [None, [{"relevance_score": 1}], [{"index": 7, "relevance_score": 1}]]
)
def test_a_malformed_engine_answer_is_an_engine_error(results: object) -> None:
    with pytest.raises(UpstreamError):
        shape_results(results, ["a"], None, False)


def test_requests_accept_the_shapes_clients_send() -> None:
    jina = parse_request(
        RerankRequest, b'{"model": "m", "query": "q", "documents": [{"text": "d"}, "e"]}'
    )
    assert jina.texts() == ["d", "e"]
    for body in (b'{"model": "m", "input": [1, 2]}', b'{"model": "m", "input": [[1], [2, 3]]}'):
        assert parse_request(EmbeddingRequest, body).input
    with pytest.raises(InvalidRequest, match="dimensions"):
        parse_request(EmbeddingRequest, b'{"model": "m", "input": "x", "dimensions": 0}')
    with pytest.raises(InvalidRequest, match="documents"):
        parse_request(RerankRequest, b'{"model": "m", "query": "q", "documents": []}')
    with pytest.raises(InvalidRequest, match="top_n"):
        parse_request(
            RerankRequest, b'{"model": "m", "query": "q", "documents": ["d"], "top_n": 0}'
        )
