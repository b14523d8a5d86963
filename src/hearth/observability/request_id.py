"""Request ids: the `x-request-id` a client sent (kept only if short and plain, since it ends up
in logs and upstream headers) or a new one, forwarded to every deployment the request reaches."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_of(scope: Mapping[str, Any]) -> str:
    """The client's id from an ASGI scope's headers when it is safe to reuse, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _SAFE_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex
