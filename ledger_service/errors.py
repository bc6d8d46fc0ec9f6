"""Errors the API answers with, and the ONE table that maps every error to an HTTP status.

Every error body is {"error": {"code": "<stable_machine_code>", "message": "<for a person>", "details": ...}}.
Routes raise ApiError subclasses or domain errors from `partledger.errors`; they never build HTTP responses.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from partledger.errors import ChainUnavailable, ValidationError

log = logging.getLogger("partledger.service")


class ApiError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details


class Unauthorized(ApiError):
    code = "unauthorized"


class Forbidden(ApiError):
    code = "forbidden"


class NotFound(ApiError):
    code = "not_found"


class BadRequest(ApiError):
    code = "invalid_request"


class Conflict(ApiError):
    code = "conflict"


class Unprocessable(ApiError):
    code = "unprocessable"


class PayloadTooLarge(ApiError):
    code = "payload_too_large"


class Unavailable(ApiError):
    code = "unavailable"


STATUS = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    BadRequest: 400,
    Conflict: 409,
    Unprocessable: 422,
    PayloadTooLarge: 413,
    ValidationError: 400,
    Unavailable: 503,
    ChainUnavailable: 503,
}


def _body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(_body(exc.code, exc.message, exc.details), status_code=STATUS[type(exc)], headers=headers)

    @app.exception_handler(ValidationError)
    async def validation_error(_: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(_body(exc.code, str(exc)), status_code=400)

    @app.exception_handler(ChainUnavailable)
    async def chain_unavailable(_: Request, exc: ChainUnavailable) -> JSONResponse:
        return JSONResponse(_body("chain_unavailable", str(exc)), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(error["loc"]), "message": error["msg"]} for error in exc.errors()]
        return JSONResponse(_body("invalid_request", "the request does not match the API schema", details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RecursionError)
    async def too_deep(_: Request, exc: RecursionError) -> JSONResponse:
        return JSONResponse(_body("invalid_request", "the request is nested too deeply"), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(_body("internal_error", "an unexpected error occurred; it was logged"), status_code=500)
