"""A request's prompt prefix fingerprint, for choosing the replica whose cache holds it.

The prompt is rendered deterministically (tools, then each message with its role and content;
or a completion's `prompt`) so that a conversation's next turn renders as the previous one plus
what was added. The rendering is cut into fixed-size chunks and each chunk's hash covers every
chunk before it, so two prompts that share a prefix share a run of hashes. Only whole chunks are
hashed: a prompt shorter than one chunk has no fingerprint (its prefix is too short to be worth
routing by). Linear in the prompt's length.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

CHUNK_BYTES = 256  # about 64 tokens of English text
_MESSAGE_END = b"\x1e"


def prompt_fingerprint(fields: Mapping[str, Any]) -> tuple[bytes, ...]:
    """The cumulative chunk hashes of a chat or completion request's prompt; () for anything
    else (embeddings, a request without a prompt)."""
    rendered = _render(fields)
    hashes: list[bytes] = []
    previous = b""
    for start in range(0, len(rendered) - CHUNK_BYTES + 1, CHUNK_BYTES):
        chunk = rendered[start : start + CHUNK_BYTES]
        previous = hashlib.blake2b(previous + chunk, digest_size=16).digest()
        hashes.append(previous)
    return tuple(hashes)


def _render(fields: Mapping[str, Any]) -> bytes:
    messages = fields.get("messages")
    if isinstance(messages, list):
        parts = []
        if fields.get("tools"):  # chat templates put the tools ahead of the conversation
            parts.append(b"tools:" + _canonical(fields["tools"]) + _MESSAGE_END)
        parts += [_canonical(message) + _MESSAGE_END for message in messages]
        return b"".join(parts)
    prompt = fields.get("prompt")
    if isinstance(prompt, str):
        return prompt.encode("utf-8", "surrogatepass")
    if prompt is not None:
        return _canonical(prompt)  # a list of prompts or of token ids
    return b""


def _canonical(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return text.encode("utf-8", "surrogatepass")
