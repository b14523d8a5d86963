"""Images that protocols carry as bare base64 (Ollama's `images`, Anthropic's base64 sources), as
the OpenAI `image_url` parts the pipeline takes, checked where the client can be told which of
its own fields is wrong (the fetcher checks them again, with the size limit, in OpenAI terms)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from hearth.errors import InvalidRequest
from hearth.upstream.images import sniff

FORMATS = "PNG, JPEG, GIF, WebP or BMP"


def base64_image_part(data: str, where: str, detail: str | None = None) -> dict[str, Any]:
    """An OpenAI image part with a data: URL of `data` (base64), typed by its first bytes; a 400
    naming `where` when it is not base64 or not an image an engine reads."""
    try:
        if not _is_base64(data):
            raise ValueError("not base64")
        head = base64.b64decode(data[:64], validate=True)  # 64: a whole number of quads
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"Invalid value for '{where}': not base64.", param=where) from None
    media = sniff(head)
    if media is None:
        raise InvalidRequest(
            f"Invalid value for '{where}': the data is not a {FORMATS} image.", param=where
        )
    image: dict[str, Any] = {"url": f"data:{media};base64,{data}"}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _is_base64(data: str) -> bool:
    """Whether `data` is base64 (standard alphabet, padded), checked without decoding it all."""
    body = data.rstrip("=")
    if not data or len(data) % 4 or len(data) - len(body) > 2:
        return False
    return not body.translate(_ALPHABET)


# Deletes every base64 character: what is left of a text is what does not belong in base64.
_ALPHABET = str.maketrans(
    "", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)
