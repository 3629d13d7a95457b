"""Graceful shutdown without signal handlers of our own: drain state and a pure ASGI middleware.

The server owns SIGTERM (uvicorn, or gunicorn's worker). Shutdown reaches the app in up to three
steps:

1. Draining (`DrainState.start()`; app.gunicorn_worker calls it the moment uvicorn begins its
   graceful shutdown and stops accepting connections): /health/ready answers 503 (`draining`)
   so nothing routes new work here, and every response carries `Connection: close`. Requests
   that already reached the process are still served: the client sent them before we stopped
   accepting, and refusing them would turn a clean restart into client errors.
2. Deadline (`DrainState.reach_deadline()`; app.gunicorn_worker calls it when uvicorn's
   graceful-shutdown timeout expires, just before uvicorn cancels the requests still running):
   a request cancelled from then on answers 503 `shutting_down` instead of uvicorn's bare 500
   (one whose response had started is cut: the worker closes its connection), and is logged as
   one warning line instead of a traceback. A cancellation before the deadline (anything else
   cancelling a request) is left alone.
3. Closing (`DrainState.refuse_new()`; the lifespan calls it when the shutdown event arrives,
   with any server): requests that still arrive are refused with 503 in the shared error shape
   and `Connection: close`; the lifespan waits (bounded) for running requests to finish before
   it closes Redis, the queue client and the engine, so no running request loses them.
"""

import asyncio
import logging

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_handlers import error_response
from app.middleware.request_context import route_template

logger = logging.getLogger(__name__)

# Probes must keep answering while draining: liveness stays 200 and readiness explains the 503.
_PROBE_PREFIX = "/health"


class DrainState:
    """Whether the process is draining, and how many requests are still running."""

    def __init__(self) -> None:
        self.draining = False
        self.deadline_reached = False
        self.refusing = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        """Readiness turns 503 and connections close after their response (idempotent)."""
        if not self.draining:
            self.draining = True
            logger.info("Draining: %d request(s) in flight", self.in_flight)

    def reach_deadline(self) -> None:
        """The server is about to cancel the requests still running (its drain time is up)."""
        self.start()
        self.deadline_reached = True

    def refuse_new(self) -> None:
        """Also refuse requests that arrive from now on (resources are about to close)."""
        self.start()
        if not self.refusing:
            self.refusing = True
            logger.info("Refusing new requests: %d request(s) in flight", self.in_flight)

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:  # noqa: ASYNC109 (a bounded wait is the point)
        """Wait until no request is running; False if `timeout` seconds passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            logger.warning("Drain timeout: %d request(s) still running", self.in_flight)
            return False
        return True


def _shutting_down(message: str) -> Response:
    return error_response(
        503,
        "shutting_down",
        message,
        headers={"Connection": "close", "Retry-After": "1"},
    )


class ShutdownMiddleware:
    """Counts running HTTP requests, closes connections while draining, answers requests
    cancelled at the drain deadline, refuses new requests once the process is closing."""

    def __init__(self, app: ASGIApp, *, drain: DrainState) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if drain.refusing and not scope["path"].startswith(_PROBE_PREFIX):
            response = _shutting_down("The server is restarting. Retry the request.")
            await response(scope, receive, send)
            return

        response_started = False

        async def send_closing(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start" and drain.draining:
                headers = MutableHeaders(scope=message)
                headers["connection"] = "close"
            await send(message)
            # Set once the server took the start: a cancellation inside `send` sent nothing.
            if message["type"] == "http.response.start":
                response_started = True

        drain.enter()
        try:
            await self.app(scope, receive, send_closing)
        except asyncio.CancelledError:
            if not drain.deadline_reached:
                raise
            await self._cancelled_at_deadline(scope, receive, send, response_started)
        finally:
            drain.leave()

    async def _cancelled_at_deadline(
        self, scope: Scope, receive: Receive, send: Send, response_started: bool
    ) -> None:
        # The cancellation ends here: the task must not stay marked as cancelling (a later
        # asyncio.timeout in it would misfire). Re-raising would make uvicorn log a traceback
        # and answer a bare 500.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        route = route_template(scope)
        logger.warning(
            "Request cancelled at the shutdown deadline: %s %s",
            scope["method"],
            route,
            extra={
                "event": "request_cancelled_at_shutdown",
                "method": scope["method"],
                "route": route,
                "response_started": response_started,
            },
        )
        if response_started:
            # Too late for an answer: the worker has already closed this connection.
            return
        response = _shutting_down("The server restarted before the request finished.")
        await response(scope, receive, send)
