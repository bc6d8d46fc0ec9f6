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
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from partledger.errors import ChainUnavailable, ValidationError

log = logging.getLogger("partledger.service")
RETRY_AFTER_SECONDS = "5"
# The database cannot be reached, or dropped the connection (a restart, a failover), or no pooled connection came
# free in time: worth trying again shortly, so a 503 with Retry-After, never a 500.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


class ApiError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.details = details
        self.headers = headers  # more headers of the answer (the EPCIS capture limits on a 413)


class Unauthorized(ApiError):
    code = "unauthorized"


class TotpRequired(Unauthorized):
    """The password was right; the account needs its second factor's code as well."""

    code = "totp_required"


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


class RowErrors(Unprocessable):
    """Entries of a request's list refused one by one; details: [{"row", "value", "code", "message"}] (1-based rows)."""

    code = "invalid_parts"

    def __init__(self, message: str, rows: list[dict[str, Any]], *, code: str | None = None) -> None:
        super().__init__(message, code=code, details=rows)
        self.rows = rows


class Unavailable(ApiError):
    code = "unavailable"


class TooManyRequests(ApiError):
    """Too many attempts (sign-in failures): 429 with Retry-After `retry_after` whole seconds."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None, details: Any = None) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after = max(1, int(retry_after))


STATUS = {
    Unauthorized: 401,
    TotpRequired: 401,
    Forbidden: 403,
    NotFound: 404,
    BadRequest: 400,
    Conflict: 409,
    Unprocessable: 422,
    RowErrors: 422,
    PayloadTooLarge: 413,
    ValidationError: 400,
    Unavailable: 503,
    TooManyRequests: 429,
    ChainUnavailable: 503,
}


def _body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
        }
    },
}
ERROR_RESPONSES = {
    "422": "the request does not match the API schema (invalid_request), or its rows or parts are refused",
    "4XX": "refused: 400 invalid, 401 no or unknown API key, 403 not allowed, 404 unknown, 409 conflict, 413 too large, 429 too many attempts (Retry-After)",
    "503": "the chain node or a database does not answer (Retry-After)",
}


def describe_errors(app: FastAPI) -> None:
    """Documents in the app's OpenAPI schema the error body every refusal carries, in place of FastAPI's default
    422 body (which this service never sends), for the statuses above; a status a route documents itself stays."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build_schema()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = ERROR_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, description in ERROR_RESPONSES.items():
                    documented = responses.get(status)
                    if documented is None or status == "422":
                        responses[status] = {"description": description, "content": content}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    describe_errors(app)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        if STATUS[type(exc)] == 503:
            headers = {"Retry-After": RETRY_AFTER_SECONDS}
        elif isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        if exc.headers:
            headers = (headers or {}) | exc.headers
        return JSONResponse(_body(exc.code, exc.message, exc.details), status_code=STATUS[type(exc)], headers=headers)

    @app.exception_handler(ValidationError)
    async def validation_error(_: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(_body(exc.code, str(exc)), status_code=400)

    @app.exception_handler(ChainUnavailable)
    async def chain_unavailable(_: Request, exc: ChainUnavailable) -> JSONResponse:
        return JSONResponse(_body("chain_unavailable", str(exc)), status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})

    for database_error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(database_error, database_unavailable)

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
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DATABASE_UNAVAILABLE):  # raised in a middleware (the audit log's), outside the table above
            return await database_unavailable(request, exc)
        log.exception("unexpected error")
        return JSONResponse(_body("internal_error", "an unexpected error occurred; it was logged"), status_code=500)


async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    body = _body("database_unavailable", "the service's database is unavailable; try again shortly")
    return JSONResponse(body, status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
