"""The one place where exceptions become HTTP responses, in the OpenAI error shape
{"error": {"message", "type", "param", "code"}}, or in the shape of the API family a path belongs
to (Ollama's `/api/*`, Anthropic's `/v1/messages`), reshaped from that one body. Clients never see
a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from hearth.errors import APIError, InvalidRequest

log = logging.getLogger(__name__)

# (HTTP status, OpenAI-shaped error body) → the body in another API family's shape.
ErrorShape = Callable[[int, dict[str, Any]], dict[str, Any]]


def add_error_shape(app: FastAPI, prefix: str, shape: ErrorShape) -> None:
    """Answer errors on `prefix` and the paths under it in the shape `shape` makes."""
    app.state.error_shapes = [*getattr(app.state, "error_shapes", []), (prefix.rstrip("/"), shape)]


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)


def shaped(app: Any, path: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped error body in the shape of the API family `path` belongs to."""
    shapes: list[tuple[str, ErrorShape]] = getattr(app.state, "error_shapes", [])
    for prefix, shape in shapes:
        if path == prefix or path.startswith(prefix + "/"):
            return shape(status, body)
    return body


def _respond(
    request: Request, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        shaped(request.app, request.url.path, status, body), status_code=status, headers=headers
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    if exc.status_code >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
    return _respond(request, exc.status_code, exc.to_body(), exc.headers)


async def api_error_response(request: Request, exc: APIError) -> JSONResponse:
    """`exc` answered in the shape of `request`'s API family, for ASGI middleware (which runs
    outside the exception handlers)."""
    return await _api_error(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    error = InvalidRequest(f"Invalid value for '{where}': {first.get('msg', 'invalid')}.")
    return _respond(request, error.status_code, error.to_body())


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Unknown path {request.url.path}. The API lives under /v1 (see /openapi.json)."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }
    return _respond(request, exc.status_code, body, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    body = {
        "error": {
            "message": "Hearth hit an internal error; it has been logged. Please report it.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    return _respond(request, 500, body)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
