"""One exception hierarchy for the whole package.

Library code raises these; the service maps them to OpenAI-shaped HTTP errors in one place
(`tiergate.service.errors`). Each class carries its HTTP status, OpenAI error `type` and a
short machine-readable `code`, so the mapping needs no per-class branches.
"""

from __future__ import annotations


class TiergateError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class ConfigError(TiergateError):
    """The configuration is invalid or names something that does not exist."""

    code = "config_error"


class InvalidRequestError(TiergateError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationError(TiergateError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(TiergateError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFoundError(TiergateError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class PayloadTooLargeError(TiergateError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class OverloadedError(TiergateError):
    """A bounded queue is full; the client should retry after `retry_after` seconds."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UpstreamError(TiergateError):
    """An upstream backend failed or answered with garbage."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    code = "gateway_timeout"


class UnavailableError(TiergateError):
    """The service is not ready (models loading, draining)."""

    status = 503
    type = "server_error"
    code = "unavailable"


class StorageError(TiergateError):
    """Persistent storage failed (disk full, corrupt file, unreachable shared tier)."""

    code = "storage_error"
