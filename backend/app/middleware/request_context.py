"""Request context as pure ASGI middleware: request id, access log line and request metrics.

Every HTTP request gets a `RequestContext` (app.observability.context): the caller's
`X-Request-ID` when it is well-formed (else a generated one), echoed on the response, and the user
id once auth resolves it. app.observability.logging puts both on every log line. When the response
is finished the middleware writes one access log line (method, route template, status, duration)
and records the request metrics.
"""

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_handlers import error_response
from app.observability.context import (
    RequestContext,
    accept_request_id,
    bind_request,
    unbind_request,
)
from app.observability.metrics import RequestMetrics

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("app.access")

REQUEST_ID_HEADER = b"x-request-id"
# Label for requests no route matched (404s, refusals before routing): bounded cardinality.
UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The matched route's path template (e.g. `/api/jobs/{job_id}`), set by the router."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Outermost middleware: request id, access log and request metrics for HTTP requests."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self._access_log = access_log
        self._metrics = RequestMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied: bytes | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                supplied = value
                break
        context = RequestContext(accept_request_id(supplied))
        token = bind_request(context)
        request_id = context.request_id.encode("latin-1")
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id)]
            await send(message)

        self._metrics.started()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if response_started:
                raise  # too late for an error response; the server closes the connection
            # Logged here, inside the request's context, so the traceback carries the request
            # id; the client gets the shared error shape with the same id to quote.
            logger.exception("Unhandled error in %s %s", scope["method"], route_template(scope))
            response = error_response(500, "internal_error", "An internal error occurred.")
            await response(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            method: str = scope["method"]
            route = route_template(scope)
            self._metrics.finished(method, route, status, duration)
            if self._access_log:
                access_logger.info(
                    "%s %s %d %.1fms",
                    method,
                    route,
                    status,
                    duration * 1000,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                    },
                )
            unbind_request(token)
