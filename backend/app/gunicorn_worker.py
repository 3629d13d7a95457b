"""gunicorn worker class: uvicorn_worker.UvicornWorker, honouring gunicorn's graceful timeout.

What the stock worker does (uvicorn-worker 0.4.0, uvicorn 0.54, read from the installed source):
it builds uvicorn's Config from gunicorn's settings but never passes `graceful_timeout`, so
uvicorn's `timeout_graceful_shutdown` stays None and, on SIGTERM, uvicorn waits for open
connections *without limit*. gunicorn's master meanwhile SIGKILLs the worker when its own
graceful_timeout expires, so a single slow request turns a graceful stop into a kill: the
lifespan shutdown never runs, Redis/SQS clients and database connections are dropped
instead of closed, and nothing is logged.

This subclass sets `timeout_graceful_shutdown` to gunicorn's graceful_timeout minus a budget for
the lifespan shutdown, so uvicorn cancels what is still running in time to close resources
before the master's SIGKILL. Its server also tells the app that draining began (readiness turns
503) as soon as shutdown starts, does not drop connections accepted just before it, and tells
the app when the drain deadline is reached, so that the requests uvicorn then cancels answer
503 instead of a bare 500 with a traceback (see _DrainingServer and app.middleware.shutdown).
It hands uvicorn the listening sockets themselves rather than gunicorn's wrappers around them
(see `_serve`), and creates a readiness file once it accepts connections when gunicorn.conf.py
names one (scripts/rolling_restart.sh waits for it). Signals stay uvicorn's: nothing here
installs a handler.
"""

import asyncio
import gc
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker as StockUvicornWorker

from app.middleware.shutdown import DrainState

# Seconds kept for the lifespan shutdown (closing Redis, the queue client and the engine).
LIFESPAN_SHUTDOWN_BUDGET = 5.0
# Seconds a just-accepted connection gets to send its request once shutdown begins.
FIRST_REQUEST_GRACE = 1.0


# Allocations between young-generation collections (CPython's default is 700).
GC_GEN0_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections for a serving process, once the app is imported.

    Freezing moves everything built so far out of the cyclic collector's reach, so full
    collections scan only what requests allocate; a larger young generation collects less
    often. Under load this took a read route's p99 from ~130 ms to ~30 ms (bench/read_routes).
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def graceful_shutdown_timeout(graceful_timeout: float) -> float:
    """uvicorn's drain limit for a gunicorn graceful_timeout (never below one second)."""
    return max(1.0, graceful_timeout - LIFESPAN_SHUTDOWN_BUDGET)


class _DrainingServer(Server):
    """uvicorn's Server with a drain that loses no accepted connection and a deadline the app
    hears about.

    uvicorn's shutdown closes every connection that has no request in progress, including
    one accepted a moment ago whose request has not been read yet: that client sees its
    connection reset although no response was ever refused (seen under load during a HUP).
    This server first stops accepting, marks the app as draining, and gives such fresh
    connections a short grace to deliver their request, which then completes normally
    (with `Connection: close`); idle keep-alive connections are closed by uvicorn as before.

    When uvicorn's drain time is up it cancels the requests still running; the app is told
    just before (`DrainState.reach_deadline`), so ShutdownMiddleware answers those 503.
    """

    def __init__(self, config: Config, *, on_ready: Callable[[], None]) -> None:
        super().__init__(config=config)
        self._on_ready = on_ready

    def _drain_state(self) -> DrainState | None:
        # config.app is the app object gunicorn loaded (create_app puts its DrainState there).
        # Read directly, not through app.deps: this module is imported by gunicorn's master,
        # which must not load the app (a HUP would then fork workers with the old code).
        drain = getattr(getattr(self.config.app, "state", None), "drain", None)
        return drain if isinstance(drain, DrainState) else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # Lifespan startup done and the sockets served: this worker accepts connections now.
        if self.started:
            self._on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain = self._drain_state()
        if drain is not None:
            drain.start()
        for server in self.servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_REQUEST_GRACE
        # Polled like uvicorn's own drain: its protocols expose no event for "request read".
        while loop.time() < deadline and any(  # noqa: ASYNC110
            _awaiting_first_request(connection) for connection in self.server_state.connections
        ):
            await asyncio.sleep(0.01)
        await super().shutdown(sockets=sockets)

    async def _wait_tasks_to_complete(self) -> None:
        # uvicorn runs this wait under timeout_graceful_shutdown. When the time is up it cancels
        # the wait and then, in the same step, every request still running: the app learns of
        # the deadline here, before any of those cancellations reaches a request. (A private
        # method of uvicorn's Server: tests/deploy/test_gunicorn.py fails if that changes.)
        try:
            await super()._wait_tasks_to_complete()
        except asyncio.CancelledError:
            drain = self._drain_state()
            if drain is not None:
                drain.reach_deadline()
            for connection in self.server_state.connections:
                _abort_unfinished_response(connection)
            raise


def _abort_unfinished_response(connection: object) -> None:
    """Drop a connection whose response started but will not finish (uvicorn's h11/httptools
    protocols): nothing more can be sent on it.

    Aborted, not closed: `abort()` schedules the protocol's connection_lost at once, so by the
    time the cancellation reaches the request uvicorn counts the client as gone, and logs
    nothing beyond the app's own line ("returned without completing response" otherwise).
    """
    cycle = getattr(connection, "cycle", None)
    transport = getattr(connection, "transport", None)
    if (
        cycle is not None
        and transport is not None
        and cycle.response_started
        and not cycle.response_complete
    ):
        transport.abort()


def _awaiting_first_request(connection: object) -> bool:
    """Accepted, open, and no request read yet (uvicorn's h11/httptools protocols)."""
    transport = getattr(connection, "transport", None)
    return (
        getattr(connection, "cycle", False) is None
        and transport is not None
        and not transport.is_closing()
    )


class UvicornWorker(StockUvicornWorker):  # type: ignore[misc]
    """Use as `worker_class = "app.gunicorn_worker.UvicornWorker"` (see gunicorn.conf.py)."""

    # Created once this worker accepts connections; gunicorn.conf.py's post_fork hook names it.
    ready_marker: Path | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = graceful_shutdown_timeout(
            float(self.cfg.graceful_timeout)
        )

    async def _serve(self) -> None:
        # Same as the stock worker, with the draining-aware server, and the listening sockets
        # unwrapped: gunicorn's wrapper is no socket.socket, so uvloop, having closed the file
        # descriptor itself when the server stops accepting, then calls the wrapper's close(),
        # which closes it a second time (EBADF, logged by gunicorn as "Error while closing
        # socket"; had another thread opened a file in between, that file would be closed). A
        # real socket uvloop detaches instead, and later closes (uvicorn's, gunicorn's) find
        # nothing left to close. asyncio's own loop closes the socket once either way.
        self.config.app = self.wsgi
        server = _DrainingServer(config=self.config, on_ready=self._mark_ready)
        self._install_sigquit_handler()
        tune_garbage_collector()
        await server.serve(sockets=[listener.sock for listener in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def _mark_ready(self) -> None:
        if self.ready_marker is None:
            return
        try:
            self.ready_marker.touch()
        except OSError as exc:
            # Serving matters more than the mark: only a rolling restart waits for it.
            self.log.warning("Could not mark the worker ready (%s): %s", self.ready_marker, exc)
