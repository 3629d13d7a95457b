"""The domain exception tree and the one JSON error shape every 4xx/5xx uses.

Services raise these; app.error_handlers renders them (and framework errors) as responses.

Shape: ``{"error": {"code": str, "message": str, ...extra}}``. ``code`` is stable and
machine-readable; ``message`` is for humans; extras (``details``, ``retry_after``, ``category``)
appear only where a code documents them. Nothing from an exception's text reaches a client
unless the exception is an ``AppError`` written for clients.
"""

from collections.abc import Mapping
from typing import Any

import orjson


class AppError(Exception):
    """Base of every error a client may see. Subclasses set status and code."""

    status_code: int = 400
    code: str = "bad_request"
    message: str = "The request could not be processed."
    # Seconds a client should wait before retrying (sent as Retry-After), for "not now" answers.
    retry_after_seconds: int | None = None

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
        if self.retry_after_seconds is not None:
            self.headers.setdefault("Retry-After", str(self.retry_after_seconds))
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
    """A dependency is down: every 503 tells the client when to retry (queue, upstream)."""

    status_code = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable."
    retry_after_seconds = 5


class ServiceBusy(AppError):
    """Every database connection stayed busy for the whole pool wait: overload, not a bug."""

    status_code = 503
    code = "service_busy"
    message = "The service is busy; retry shortly."
    retry_after_seconds = 1


class LoginOverloaded(AppError):
    """This process's password hashing is full (hashes running and queued up to their bound):
    the login, registration or reset is refused at once instead of queueing behind them."""

    status_code = 503
    code = "login_overloaded"
    message = "Too many sign-ins are being processed; retry shortly."
    retry_after_seconds = 1


class DatabaseTimeout(AppError):
    """A statement or lock wait ran past its time budget; the transaction was rolled back."""

    status_code = 504
    code = "database_timeout"
    message = "The database did not answer in time; retry shortly."
    retry_after_seconds = 2


class DatabaseUnavailable(AppError):
    """The database (or the pooler in front of it) could not be reached or dropped the
    connection mid-request; its open transaction was rolled back by the server."""

    status_code = 503
    code = "database_unavailable"
    message = "The database is unavailable; retry shortly."
    retry_after_seconds = 2


class CommitOutcomeUnknown(DatabaseUnavailable):
    """The connection was lost during COMMIT and the database could not be asked afterwards
    whether the transaction committed: the change may or may not have been saved."""

    code = "commit_outcome_unknown"
    message = (
        "The connection to the database was lost while saving; the change may have been saved."
        " Check before sending it again."
    )


def error_body(code: str, message: str, **extra: Any) -> bytes:
    """Serialise the shared error shape."""
    return orjson.dumps({"error": {"code": code, "message": message, **extra}})
