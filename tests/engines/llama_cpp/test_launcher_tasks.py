"""llama-server for embedding and reranker GGUFs: the flags, and `dimensions` refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.config import EngineSettings
from hearth.engines.base import Capabilities
from hearth.engines.llama_cpp.launcher import LlamaServerLauncher
from hearth.errors import InvalidRequest


def launcher(task: str, pooling: str | None) -> LlamaServerLauncher:
    return LlamaServerLauncher(
        binary=Path("/bin/llama-server"),
        model_path=Path("/m.gguf"),
        alias="emb",
        settings=EngineSettings(),
        capabilities=Capabilities(embeddings=task == "embeddings", rerank=task == "rerank"),
        task=task,
        pooling=pooling,
    )


def test_embedding_and_rerank_flags() -> None:
    embed = launcher("embeddings", "cls").command("127.0.0.1", 1).argv
    assert "--embedding" in embed
    assert embed[embed.index("--pooling") + 1] == "cls"
    assert "--jinja" not in embed
    rerank = launcher("rerank", None).command("127.0.0.1", 1).argv
    assert "--reranking" in rerank
    assert "--pooling" not in rerank  # llama.cpp takes it from the file


def test_dimensions_are_refused_naming_the_model() -> None:
    body = {"model": "emb", "input": "x", "dimensions": 64}
    with pytest.raises(InvalidRequest, match=r"'emb'.*dimensions") as caught:
        launcher("embeddings", "mean").prepare_request(body)
    assert caught.value.param == "dimensions"
    plain = {"model": "emb", "input": "x"}
    launcher("embeddings", "mean").prepare_request(plain)
    assert plain == {"model": "emb", "input": "x"}
