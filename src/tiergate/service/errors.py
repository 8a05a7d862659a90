"""Every error leaves the gateway in OpenAI's shape: {"error": {"message", "type", "code", "param"}}."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from tiergate.errors import OverloadedError, TiergateError

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def error_response(status: int, message: str, type_: str, code: str | None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(error_body(message, type_, code, param)), status_code=status,
                    media_type="application/json", headers=headers)


def from_exception(exc: TiergateError) -> Response:
    headers = None
    if isinstance(exc, OverloadedError) or exc.status == 429:
        headers = {"Retry-After": str(max(1, round(getattr(exc, "retry_after", 1) or 1)))}
    if exc.status >= 500:
        log.warning("request failed: %s", exc.message, extra={"error_code": exc.code})
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.param, headers)


def describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    param = None
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            return "the request body is not valid JSON", None
        where = ".".join(loc) or "body"
        param = param or where
        problems.append(f"{where}: {err.get('msg')}")
    return "invalid request: " + "; ".join(problems), param


def install(app: FastAPI) -> None:
    @app.exception_handler(TiergateError)
    async def _tiergate(_: Request, exc: TiergateError) -> Response:
        return from_exception(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        message, param = describe_validation(exc)
        return error_response(400, message, "invalid_request_error", "invalid_request", param)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(exc.status_code, str(exc.detail), _HTTP_TYPES.get(exc.status_code, "server_error"),
                              code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal server error", "server_error", "internal_error")
