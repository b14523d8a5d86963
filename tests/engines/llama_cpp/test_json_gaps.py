"""While llama-server's output is held to a JSON schema, the whitespace a small model wanders in
(tabs and newlines between JSON tokens) is banned through `logit_bias`, the client's own biases
kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hearth.config import EngineSettings
from hearth.engines.llama_cpp.launcher import JSON_GAPS, LlamaServerLauncher

BANNED = [[gap, False] for gap in JSON_GAPS]


def prepared(body: dict[str, Any]) -> dict[str, Any]:
    launcher = LlamaServerLauncher(
        binary=Path("llama-server"), model_path=Path("m.gguf"), alias="m", settings=EngineSettings()
    )
    launcher.prepare_request(body)
    return body


@pytest.mark.parametrize(
    "held",
    [
        {"json_schema": {"type": "object"}},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
    ],
)
def test_output_held_to_json_bans_the_gaps(held: dict[str, Any]) -> None:
    assert prepared(dict(held))["logit_bias"] == BANNED
    with_bias = prepared({**held, "logit_bias": {"15": -5.0, "hello": 2.0}})
    assert with_bias["logit_bias"] == [[15, -5.0], ["hello", 2.0], *BANNED]


@pytest.mark.parametrize("free", [{}, {"response_format": {"type": "text"}}])
def test_free_text_keeps_its_whitespace(free: dict[str, Any]) -> None:
    assert "logit_bias" not in prepared(dict(free))
    assert prepared({**free, "logit_bias": {"15": 1.0}})["logit_bias"] == {"15": 1.0}
