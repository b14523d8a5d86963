"""The prompt prefix fingerprint: a conversation's next turn extends its previous fingerprint,
and prompts that differ early share nothing."""

from __future__ import annotations

from typing import Any

from hearth.routing.prompt_prefix import CHUNK_BYTES, prompt_fingerprint

DOCUMENT = "The quick brown fox jumps over the lazy dog. " * 60  # ~2,700 characters


def chat(*turns: str, system: str = DOCUMENT, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return {"model": "m", "messages": messages, **extra}


def test_the_next_turn_extends_the_fingerprint_of_the_previous_one() -> None:
    first = prompt_fingerprint(chat("What does the fox do?"))
    second = prompt_fingerprint(chat("What does the fox do?", "It jumps.", "Over what?"))
    assert len(first) >= len(DOCUMENT) // CHUNK_BYTES
    assert len(second) > len(first)
    # Every whole chunk of the first turn is a chunk of the second, except the last one, which
    # may run into the part the second turn added.
    assert second[: len(first) - 1] == first[:-1]


def test_a_different_document_shares_no_chunk() -> None:
    one = prompt_fingerprint(chat("Hi"))
    other = prompt_fingerprint(chat("Hi", system="Another text entirely. " * 100))
    assert one[0] != other[0]
    assert not set(one) & set(other)


def test_each_hash_covers_everything_before_its_chunk() -> None:
    # Same second chunk, different first chunk: the second hashes differ too.
    a = prompt_fingerprint({"prompt": "a" * CHUNK_BYTES + "z" * CHUNK_BYTES})
    b = prompt_fingerprint({"prompt": "b" * CHUNK_BYTES + "z" * CHUNK_BYTES})
    assert len(a) == len(b) == 2
    assert a[1] != b[1]


def test_key_order_does_not_matter_and_content_does() -> None:
    message = {"role": "system", "content": DOCUMENT}
    reordered = {"content": DOCUMENT, "role": "system"}
    assert prompt_fingerprint({"messages": [message]}) == prompt_fingerprint(
        {"messages": [reordered]}
    )
    changed = {"role": "system", "content": DOCUMENT.replace("lazy", "sleepy", 1)}
    assert prompt_fingerprint({"messages": [message]}) != prompt_fingerprint(
        {"messages": [changed]}
    )


def test_tools_come_first_and_change_the_whole_fingerprint() -> None:
    tool = {"type": "function", "function": {"name": "look_up", "parameters": {}}}
    plain, with_tools = prompt_fingerprint(chat("Hi")), prompt_fingerprint(chat("Hi", tools=[tool]))
    assert plain[0] != with_tools[0]


def test_completions_prompt_and_what_has_no_prompt() -> None:
    assert len(prompt_fingerprint({"prompt": "x" * (3 * CHUNK_BYTES + 5)})) == 3
    assert prompt_fingerprint({"prompt": "short"}) == ()  # less than one chunk
    assert prompt_fingerprint({"input": DOCUMENT}) == ()  # embeddings
    assert len(prompt_fingerprint({"prompt": [[1, 2, 3] * 200]})) > 0  # token ids
