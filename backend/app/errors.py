"""The domain exception tree and the one JSON error shape every 4xx/5xx uses.

Shape: ``{"error": {"code": str, "message": str, ...extra}}``. ``code`` is stable and
machine-readable; ``message`` is for humans; extras (``details``, ``retry_after``, ``category``)
appear only where a code documents them. Nothing from an exception's text reaches a client
unless the exception is an ``AppError`` written for clients.
"""

from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

# Codes for HTTP statuses raised by the framework itself (unknown route, wrong method, ...).
_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}


class AppError(Exception):
    """Base of every error a client may see. Subclasses set status and code."""

    status_code: int = 400
    code: str = "bad_request"
    message: str = "The request could not be processed."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(self.message)


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"
    message = "Authentication is required."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    message = "You do not have access to this resource."


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    message = "The resource was not found."


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    message = "The request conflicts with the current state."


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    message = "The request body is too large."


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"
    message = "The file type is not supported."


class InvalidInput(AppError):
    status_code = 422
    code = "validation_error"
    message = "The request is invalid."


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable."


def error_body(code: str, message: str, **extra: Any) -> bytes:
    """Serialise the shared error shape."""
    return orjson.dumps({"error": {"code": code, "message": message, **extra}})


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A response in the shared error shape (usable from handlers and pure ASGI middleware)."""
    return Response(
        error_body(code, message, **extra),
        status_code=status_code,
        headers=dict(headers or {}),
        media_type="application/json",
    )


async def _app_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return error_response(exc.status_code, exc.code, exc.message, headers=exc.headers, **exc.extra)


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Only location, message and type: pydantic's `input` and `ctx` can echo secrets or objects.
    details = [
        {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    return error_response(422, "validation_error", "The request is invalid.", details=details)


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "The request could not be processed."
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _pool_timeout_handler(request: Request, exc: Exception) -> Response:
    # Every database connection stayed busy for the whole pool timeout: overload, not a bug.
    return error_response(
        503,
        "service_busy",
        "The service is busy; retry shortly.",
        headers={"Retry-After": "1"},
    )


async def _unhandled_error_handler(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this response is sent, so the server logs the traceback once.
    return error_response(500, "internal_error", "An internal error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the shared shape."""
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _pool_timeout_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
