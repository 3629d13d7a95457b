"""Logging: JSON lines in production, readable lines in development, request ids on every line.

One handler on the root logger carries the formatter and the request-context filter. Server
loggers (uvicorn, gunicorn) are routed to it so their lines look like ours; their access loggers
are silenced because app.middleware.request_context writes the one access line per request
(with the route template and duration, which the servers do not know).

`gunicorn_logconfig()` gives gunicorn's master the same formatter (gunicorn.conf.py), so
master and worker lines share one format.
"""

import logging
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import orjson

from app.observability.context import current_request

LogFormat = Literal["json", "text"]

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD_ATTRS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "request_id",
        "user_id",
        "color_message",  # uvicorn's ANSI-coloured copy of the message
        "taskName",
    }
)
# Server loggers routed through the root handler, and access loggers replaced by ours.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "gunicorn", "gunicorn.error")
_SERVER_ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access")
_HANDLER_MARK = "_hiringpro_handler"


class RequestContextFilter(logging.Filter):
    """Adds `request_id` and `user_id` (None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_request()
        record.request_id = context.request_id if context is not None else None
        record.user_id = context.user_id if context is not None else None
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRS}


# A formatter must never fail: a log call with a bad value would lose the line (or, in a
# handler that re-raises, the request). These helpers turn any value into text.
MAX_VALUE_CHARS = 10_000


def safe_text(value: Any) -> str:
    """`str(value)`, or a stand-in when that raises (a broken __str__, an int too long to print);
    cut to MAX_VALUE_CHARS."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        try:
            text = repr(value)
        except Exception:
            text = f"<unprintable {type(value).__name__}>"
    if len(text) > MAX_VALUE_CHARS:
        text = f"{text[:MAX_VALUE_CHARS]}...<{len(text) - MAX_VALUE_CHARS} more characters>"
    return text


def _message(record: logging.LogRecord) -> str:
    """The record's message; when `msg % args` fails, the template and arguments as text."""
    try:
        return safe_text(record.getMessage())
    except Exception:
        return f"{safe_text(record.msg)} (unformattable arguments: {safe_text(record.args)})"


def _json_default(value: Any) -> str:
    return safe_text(value)


def _to_json(entry: dict[str, Any]) -> str:
    try:
        return orjson.dumps(entry, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except Exception:
        # orjson refuses some values outright (integers past 64 bits, lone surrogates, deep
        # nesting): then every value is written as text, surrogates escaped.
        plain = {
            key: safe_text(value).encode("utf-8", "backslashreplace").decode("utf-8")
            for key, value in entry.items()
        }
        return orjson.dumps(plain).decode()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request/user id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
            entry["user_id"] = getattr(record, "user_id", None)
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _to_json(entry)


class TextFormatter(logging.Formatter):
    """`time LEVEL [request_id user=N] logger: message key=value ...` for people."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        user_id = getattr(record, "user_id", None)
        context = ""
        if request_id is not None:
            context = f"[{request_id}{f' user={user_id}' if user_id is not None else ''}] "
        line = (
            f"{self.formatTime(record)} {record.levelname:<7} {context}{record.name}: "
            f"{_message(record)}"
        )
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{key}={safe_text(value)}" for key, value in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        # A NUL breaks terminals and tools that read C strings; a lone surrogate breaks encoding.
        line = line.replace("\x00", "\\x00")
        return line.encode("utf-8", "backslashreplace").decode("utf-8")


def resolve_format(log_format: str, environment: str) -> LogFormat:
    """`auto` means JSON everywhere except development."""
    if log_format == "auto":
        return "text" if environment == "development" else "json"
    return "json" if log_format == "json" else "text"


def _formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Install the app's handler on the root logger and route server loggers through it.

    Idempotent: a handler from an earlier call, or from `gunicorn_logconfig` in the master
    this worker was forked from, is replaced; other handlers (e.g. pytest's) stay.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False) or isinstance(
            handler.formatter, JsonFormatter | TextFormatter
        ):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(_formatter(log_format))
    handler.addFilter(RequestContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
        server_logger.setLevel(level)
    for name in _SERVER_ACCESS_LOGGERS:
        access_logger = logging.getLogger(name)
        access_logger.handlers.clear()
        # No handlers and no propagation: uvicorn then skips building access lines at all.
        access_logger.propagate = False


def gunicorn_logconfig(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A `logconfig_dict` for gunicorn's master using the app's formatter.

    gunicorn.error keeps a handler of its own (not only propagation) because
    uvicorn_worker copies that logger's handlers onto uvicorn.error in each worker.
    """
    formatter_class = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_context": {"()": RequestContextFilter}},
        "formatters": {"app": {"()": formatter_class}},
        "handlers": {
            "app": {
                "class": "logging.StreamHandler",
                "formatter": "app",
                "filters": ["request_context"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["app"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["app"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
        },
    }


class PerformanceLogger:
    """Times an operation and logs it: DEBUG normally, WARNING when slower than `slow_ms`.

    Use as a context manager, sync or async::

        async with PerformanceLogger("resume_parse", user_id=user.id):
            ...

    The line carries `operation`, `duration_ms`, `outcome` (ok/error) and the given fields;
    `elapsed_ms` is readable afterwards.
    """

    def __init__(
        self,
        operation: str,
        *,
        logger: logging.Logger | None = None,
        slow_ms: float = 1000.0,
        **fields: Any,
    ) -> None:
        self.operation = operation
        self.logger = logger or logging.getLogger("app.performance")
        self.slow_ms = slow_ms
        self.fields: Mapping[str, Any] = fields
        self.elapsed_ms = 0.0
        self._started = 0.0

    def __enter__(self) -> "PerformanceLogger":
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.elapsed_ms = (time.perf_counter() - self._started) * 1000
        outcome = "ok" if exc_type is None else "error"
        level = logging.WARNING if self.elapsed_ms >= self.slow_ms else logging.DEBUG
        if exc_type is not None:
            level = max(level, logging.INFO)
        self.logger.log(
            level,
            "%s %s in %.1fms",
            self.operation,
            outcome,
            self.elapsed_ms,
            extra={
                "operation": self.operation,
                "duration_ms": round(self.elapsed_ms, 2),
                "outcome": outcome,
                **self.fields,
            },
        )

    async def __aenter__(self) -> "PerformanceLogger":
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)
