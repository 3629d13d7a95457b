"""Every error as an HTTP response in the shared shape (see app.errors): the handlers the apps
install, and `error_response` for pure ASGI middleware."""

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.errors import AppError, ServiceBusy, error_body

logger = logging.getLogger(__name__)

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
    # SQLAlchemy's pool wait ran out: the same answer as the read pool's.
    return await _app_error_handler(request, ServiceBusy())


async def _client_disconnect_handler(request: Request, exc: Exception) -> Response:
    # The client went away while sending its body (a cut-off upload): nothing failed here and
    # nobody reads the answer, so no error line and no 500.
    logger.info("Client disconnected before sending the whole request body")
    return error_response(400, "client_disconnected", "The request body was not received.")


async def _unhandled_error_handler(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this response is sent, so the server logs the traceback once.
    return error_response(500, "internal_error", "An internal error occurred.")


# The 422 body as the handlers above write it, replacing FastAPI's `{"detail": [...]}` in the
# OpenAPI schema so clients (and the schemathesis run) see the shape they actually get.
_VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ValidationErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "properties": {
                            "loc": {
                                "type": "array",
                                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                            },
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}


def _document_error_shape(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = _VALIDATION_ERROR_SCHEMA
                schemas.pop("ValidationError", None)  # referenced only by the schema replaced
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the shared shape (and document the 422 shape)."""
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _pool_timeout_handler)
    app.add_exception_handler(ClientDisconnect, _client_disconnect_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
    _document_error_shape(app)
