"""Hearth's one exception tree. `hearth.api.errors` maps it to HTTP in the OpenAI error shape;
foreign errors are translated into it at one boundary each (aiohttp's in `hearth.upstream.client`).

HearthError
├── ConfigError                 settings or environment are wrong; raised at start, never over HTTP
├── SetupError                  something Hearth needs is missing (engine binary, model file)
├── EngineStartError            an engine exited or never became healthy while loading
├── ModelStoreError             the model store cannot do that (bad file or name, rm refused)
│   └── PullError               a download from the hub failed (unreachable, offline, not found)
│       ├── ChecksumMismatch    the downloaded bytes differ from the checksum the hub publishes
│       └── HubUnreachable      the hub could not be reached or broke off (HTTP: 503)
└── APIError                    carries an HTTP status and an OpenAI error type/code
    ├── InvalidRequest          400  the request is malformed or out of range
    ├── RequestTooLarge         413  the body exceeds max_request_bytes
    ├── ModelNotFound           404  no model of that name in the catalogue
    ├── KeyNotFound             404  no active API key has that id, prefix or name
    ├── ResponseNotFound        404  no stored response of that id for this key
    ├── ModelTooLarge           400  the model can never fit in the memory budget
    ├── Unauthenticated         401  no API key, or an unknown, revoked or expired one
    ├── PermissionDenied        403  the key may not use that model or endpoint
    ├── RateLimited             429  a key's or team's requests or tokens per minute ran out
    ├── QuotaExceeded           429  a key's or team's budget for the period is spent
    ├── ServerBusy              503  no room to load a model and the wait queue is full
    ├── DatabaseUnavailable     503  the key or usage database cannot be reached (admin actions)
    ├── ClientDisconnected      499  the client hung up first; its work was cancelled (logged only)
    ├── ShuttingDown            503  Hearth stopped before this answer was ready
    ├── EngineNotInstalled      503  a local model's engine is missing from this machine
    ├── NoDeploymentAvailable   503  every deployment of a model failed or has its circuit open
    ├── UpstreamStatusError     4xx/5xx  a deployment refused the request: its status relayed
    └── UpstreamError           502  a deployment (local engine or remote server) could not answer
        ├── UpstreamUnavailable   503  not reachable, or not accepting connections in time
        │   └── EngineUnavailable 503  a local engine is loading, restarting or failed to start
        ├── UpstreamDisconnected  502  the connection broke mid-answer, or the answer was malformed
        ├── EngineFailed          502  a local engine answered a request with a server error
        └── UpstreamTimeout       504  no answer (or no next chunk) within the timeout
"""

from __future__ import annotations

from typing import Any


class HearthError(Exception):
    """Base of every error Hearth raises on purpose."""


class ConfigError(HearthError):
    """The settings are invalid; the message names the key and its source."""


class SetupError(HearthError):
    """A required part is missing; the message says how to get it."""


class EngineStartError(HearthError):
    """The engine exited or never became healthy while loading."""


class APIError(HearthError):
    status_code = 500
    error_type = "server_error"
    code: str | None = None
    headers: dict[str, str] | None = None  # extra response headers, e.g. Retry-After

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class RequestTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class ModelNotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str, available: list[str]) -> None:
        names = ", ".join(available) or "none"
        super().__init__(
            f"The model '{model}' does not exist. Available models: {names}.", param="model"
        )


class KeyNotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ResponseNotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class UpstreamStatusError(APIError):
    """An engine answered with an error status; its message is relayed, its status kept."""

    def __init__(
        self,
        status_code: int,
        message: str,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after  # the upstream's Retry-After, in seconds
        if error_type:
            self.error_type = error_type
        elif status_code < 500:
            self.error_type = "invalid_request_error"

    @property
    def transient(self) -> bool:
        """Worth retrying: rate limited, timed out, or a server-side failure."""
        return self.status_code in (408, 429) or self.status_code >= 500


class Unauthenticated(APIError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(APIError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class RateLimited(APIError):
    """Answered with Retry-After and OpenAI's x-ratelimit-* headers."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.headers = headers


class QuotaExceeded(APIError):
    status_code = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"


class ModelTooLarge(APIError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "model_too_large"


class ServerBusy(APIError):
    """Answered with Retry-After: the condition is temporary."""

    status_code = 503
    error_type = "server_error"
    code = "server_busy"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"retry-after": str(retry_after)}


class DatabaseUnavailable(APIError):
    """The database (keys, usage) could not be reached for an action that needs it, such as
    creating a key or a usage report. Requests keep being served from the cached keys."""

    status_code = 503
    error_type = "server_error"
    code = "database_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"retry-after": "5"}


class UpstreamError(APIError):
    """A deployment could not answer: worth a retry or the next deployment."""

    status_code = 502
    error_type = "server_error"


class UpstreamUnavailable(UpstreamError):
    status_code = 503
    code = "upstream_unavailable"


class EngineUnavailable(UpstreamUnavailable):
    """A local engine is not ready; the message says why (loading, restarting, start failed)."""

    code = "engine_unavailable"


class ClientDisconnected(APIError):
    """The client hung up before its answer was ready; the work for it was cancelled. Nobody
    reads this answer: it exists so usage, logs and metrics record what happened (499, as
    nginx writes it)."""

    status_code = 499
    error_type = "invalid_request_error"
    code = "client_closed_request"


class ShuttingDown(APIError):
    """Hearth is stopping and its drain time ran out before this answer was ready."""

    status_code = 503
    error_type = "server_error"
    code = "shutting_down"

    def __init__(
        self, message: str = "Hearth is shutting down; retry on another replica or once it is back."
    ) -> None:
        super().__init__(message)
        self.headers = {"retry-after": "5"}


class EngineNotInstalled(APIError):
    """A local model whose engine is missing from this machine. Not an UpstreamError: it says
    nothing about the engine's health, so it never opens a circuit breaker (which would hide
    this message behind "circuit open"), though a route still falls back past it."""

    status_code = 503
    error_type = "server_error"
    code = "engine_not_installed"


class UpstreamDisconnected(UpstreamError):
    status_code = 502
    code = "upstream_disconnected"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class EngineFailed(UpstreamError):
    """A local engine answered a request with a server error. Its own message (often an internal
    parser's) goes to Hearth's log, not to the client; the engine is up, so no breaker counts it."""

    code = "engine_error"


class NoDeploymentAvailable(APIError):
    """Every deployment of a model failed or has its circuit open."""

    status_code = 503
    error_type = "server_error"
    code = "no_deployment_available"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.headers = {"retry-after": str(max(1, round(retry_after)))}


class ModelStoreError(HearthError):
    """The model store refused or failed an operation; the message says why and what to do."""


class PullError(ModelStoreError):
    """Downloading a model from the hub failed."""


class ChecksumMismatch(PullError):
    """A downloaded file's sha256 is not the one the hub publishes; the file was deleted."""


class HubUnreachable(PullError):
    """The hub did not answer, or the connection broke off; the message names the cause."""
