"""Graceful shutdown without signal handlers of our own: drain state and a pure ASGI middleware.

The server owns SIGTERM (uvicorn, or gunicorn's worker). Shutdown reaches the app in two steps:

1. Draining (`DrainState.start()`; app.gunicorn_worker calls it the moment uvicorn begins its
   graceful shutdown and stops accepting connections): /health/ready answers 503 (`draining`)
   so nothing routes new work here, and every response carries `Connection: close`. Requests
   that already reached the process are still served: the client sent them before we stopped
   accepting, and refusing them would turn a clean restart into client errors.
2. Closing (`DrainState.refuse_new()`; the lifespan calls it when the shutdown event arrives,
   with any server): requests that still arrive are refused with 503 in the shared error shape
   and `Connection: close`; the lifespan waits (bounded) for running requests to finish before
   it closes Redis, the queue client and the engine, so no running request loses them.
"""

import asyncio
import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_handlers import error_response

logger = logging.getLogger(__name__)

# Probes must keep answering while draining: liveness stays 200 and readiness explains the 503.
_PROBE_PREFIX = "/health"


class DrainState:
    """Whether the process is draining, and how many requests are still running."""

    def __init__(self) -> None:
        self.draining = False
        self.refusing = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        """Readiness turns 503 and connections close after their response (idempotent)."""
        if not self.draining:
            self.draining = True
            logger.info("Draining: %d request(s) in flight", self.in_flight)

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


class ShutdownMiddleware:
    """Counts running HTTP requests, closes connections while draining, refuses new requests
    once the process is closing."""

    def __init__(self, app: ASGIApp, *, drain: DrainState) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if drain.refusing and not scope["path"].startswith(_PROBE_PREFIX):
            response = error_response(
                503,
                "shutting_down",
                "The server is restarting. Retry the request.",
                headers={"Connection": "close", "Retry-After": "1"},
            )
            await response(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and drain.draining:
                headers = MutableHeaders(scope=message)
                headers["connection"] = "close"
            await send(message)

        drain.enter()
        try:
            await self.app(scope, receive, send_closing)
        finally:
            drain.leave()
