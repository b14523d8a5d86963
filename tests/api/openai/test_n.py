"""`n` > 1 through a real `hearth serve` and the real engine: n choices, usage counting every
completion (the prompt once), streamed and not, chat and completions; over the cap is a 400."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from support.hearth_server import HearthServer, StartHearth

MODEL = "gemma-3-270m"
# Long answers, cut at max_tokens: every choice's token count is then the same whatever the text.
# (Choices batched together are not bit-identical to lone requests with the same seed: the
# engine's arithmetic depends on the batch, so texts are not compared across runs.)
ASK: Any = [{"role": "user", "content": "Tell me a long story about the sea."}]
PROMPT = "The sea is"


def one_chat(llm: openai.OpenAI, seed: int) -> tuple[str, int, int]:
    reply = llm.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=16, temperature=1.0, seed=seed
    )
    assert reply.usage is not None
    content = reply.choices[0].message.content or ""
    return content, reply.usage.prompt_tokens, reply.usage.completion_tokens


def test_chat_n_3_gives_three_choices_and_counts_them_all(hearth: HearthServer) -> None:
    llm = hearth.openai()
    reply = llm.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=16, temperature=1.0, seed=40, n=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    singles = [one_chat(llm, 40 + i) for i in range(3)]
    assert all(c.message.content for c in reply.choices)
    assert len({c.message.content for c in reply.choices}) > 1  # seed + i: different choices
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sum(s[2] for s in singles)
    assert reply.usage.prompt_tokens == singles[0][1]  # one prompt, counted once
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_n_3_streamed(hearth: HearthServer) -> None:
    llm = hearth.openai()
    stream = llm.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=16,
        temperature=1.0,
        seed=40,
        n=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    usages, ids = [], set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for part in chunk.choices:
            texts[part.index] = texts.get(part.index, "") + (part.delta.content or "")
            if part.finish_reason:
                finishes[part.index] = part.finish_reason
    assert sorted(texts) == [0, 1, 2] and sorted(finishes) == [0, 1, 2]
    assert len(ids) == 1
    (usage,) = usages
    singles = [one_chat(llm, 40 + i) for i in range(3)]
    assert len({texts[i] for i in range(3)}) > 1 and all(texts.values())
    assert usage.completion_tokens == sum(s[2] for s in singles)
    assert usage.prompt_tokens == singles[0][1]


def test_completions_n_3(hearth: HearthServer) -> None:
    llm = hearth.openai()
    reply = llm.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=9, n=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    singles = [
        llm.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=s)
        for s in (9, 10, 11)
    ]
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)  # type: ignore[union-attr]
    stream = llm.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=8,
        temperature=1.0,
        seed=9,
        n=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for part in chunk.choices:
            texts[part.index] = texts.get(part.index, "") + part.text
    assert sorted(texts) == [0, 1, 2] and all(texts.values())
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens


def test_n_over_the_cap_is_a_400_naming_n(start_hearth: StartHearth) -> None:
    server = start_hearth(env={"HEARTH_ROUTING__MAX_CHOICES": "2"})
    llm = server.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        llm.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, n=3)
    assert caught.value.body["param"] == "n"  # type: ignore[index]
    assert "routing.max_choices" in caught.value.message
    reply = llm.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, n=2)
    assert len(reply.choices) == 2


def test_more_choices_than_slots_finish_streamed_or_not(
    start_hearth: StartHearth, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Two slots, three choices, two such requests at once: a choice that kept its slot until
    # the whole answer was sent would leave the third waiting for it forever (a deadlock that
    # only the queue's wait limit ended, with a 503, before choices released their slots).
    config = tmp_path_factory.mktemp("config") / "hearth.yaml"
    config.write_text("models:\n  two-slots:\n    model: gemma-3-270m\n    parallel: 2\n")
    server = start_hearth("--config", str(config), env={"HEARTH_REQUEST_QUEUE_TIMEOUT": "60"})
    llm = server.openai().with_options(timeout=90, max_retries=0)

    def whole() -> int:
        reply = llm.chat.completions.create(
            model="two-slots", messages=ASK, max_tokens=8, temperature=1.0, seed=3, n=3
        )
        return len(reply.choices)

    def streamed() -> int:
        stream = llm.chat.completions.create(
            model="two-slots", messages=ASK, max_tokens=8, n=3, stream=True
        )
        return len({part.index for chunk in stream for part in chunk.choices})

    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(call) for call in (whole, whole, streamed, streamed)]
        assert [answer.result(timeout=120) for answer in answers] == [3, 3, 3, 3]
