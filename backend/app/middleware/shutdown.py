"""Graceful shutdown without signal handlers of our own: drain state and a pure ASGI middleware.

The server owns SIGTERM (uvicorn, or gunicorn's worker). Shutdown reaches the app two ways:
app.gunicorn_worker calls `DrainState.start()` the moment uvicorn begins its graceful shutdown,
and the lifespan calls it when the shutdown event arrives (any server). From then on:

* /health/ready answers 503 (`draining`), so nothing routes new work here;
* new requests are refused with 503 in the shared error shape and `Connection: close`, so
  clients and proxies reconnect elsewhere instead of reusing this connection;
* requests already running finish; their responses carry `Connection: close`;
* the lifespan waits (bounded) for `in_flight` to reach zero before closing Redis, the queue
  client and the engine, so no running request loses its resources.
"""

import asyncio
import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response

logger = logging.getLogger(__name__)

# Probes must keep answering while draining: liveness stays 200 and readiness explains the 503.
_PROBE_PREFIX = "/health"


class DrainState:
    """Whether the process is draining, and how many requests are still running."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        """Stop taking new work (idempotent)."""
        if not self.draining:
            self.draining = True
            logger.info("Draining: refusing new requests, %d in flight", self.in_flight)

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
    """Counts running HTTP requests and refuses new ones while the process drains."""

    def __init__(self, app: ASGIApp, *, drain: DrainState) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if drain.draining and not scope["path"].startswith(_PROBE_PREFIX):
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
