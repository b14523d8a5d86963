"""Prompts of a chosen approximate length in tokens."""

from __future__ import annotations

# Common English words that most tokenizers (Llama, Gemma, GPT, Qwen) encode as one token each
# with their leading space, so N of them make a prompt of about N tokens.
_WORDS_TEXT = (
    "the time people year way day man thing woman life child world school state family "
    "student group country problem hand part place case week company system program "
    "question work government number night point home water room mother area money story "
    "fact month lot right study book eye job word business issue side kind head house "
    "service friend father power hour game line end member law car city name team minute "
    "idea kid body face others level office door health person art war history party result"
)


def build_prompt(tokens: int) -> str:
    """About `tokens` tokens of text (one common word per token); a chat template or a
    tokenizer's start token adds a few more."""
    if tokens < 1:
        raise ValueError("a prompt needs at least one token")
    vocabulary = _WORDS_TEXT.split()
    words = [vocabulary[i % len(vocabulary)] for i in range(tokens)]
    return " ".join(words)
