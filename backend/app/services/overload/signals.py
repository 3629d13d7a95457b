"""Load the latency of requests does not show in time: event-loop lag and database pool waiters.

A periodic task (`LoadMonitor`) sleeps for a fixed interval and measures how late it wakes up:
that delay is how long every ready callback (a request's next step) waits for the loop, the
cost of CPU-bound work or of more requests than the process can run. It samples the number of
requests waiting for a database connection at the same time. The concurrency limit reads the
averages once per window (`LoadSignals.take`), so both count as congestion before latencies do.
"""

import asyncio
import logging
from collections.abc import Callable

from app.observability.metrics import DB_POOL_WAITERS, EVENT_LOOP_LAG

logger = logging.getLogger(__name__)


class LoadSignals:
    """Loop lag and pool waiters sampled since the limit last read them."""

    def __init__(self) -> None:
        self._lag_sum = 0.0
        self._waiters_sum = 0.0
        self._count = 0

    def record(self, lag: float, waiters: int) -> None:
        """One sample: the loop's lateness in seconds and the requests waiting for a connection."""
        self._lag_sum += lag
        self._waiters_sum += waiters
        self._count += 1

    def take(self) -> tuple[float, float]:
        """The mean lag (seconds) and mean waiters since the last call (0, 0 without samples)."""
        if self._count == 0:
            return 0.0, 0.0
        means = (self._lag_sum / self._count, self._waiters_sum / self._count)
        self._lag_sum = self._waiters_sum = 0.0
        self._count = 0
        return means


class LoadMonitor:
    """The periodic task feeding `signals`, one per event loop that serves requests."""

    def __init__(self, signals: LoadSignals, interval: float, waiters: Callable[[], int]) -> None:
        self._signals = signals
        self._interval = interval
        self._waiters = waiters
        self._task: asyncio.Task[None] | None = None
        self._probe_failed = False

    def ensure_running(self) -> None:
        """Start the task in the running loop unless it already runs there (cheap per request).

        A task of a loop that ended (tests run one loop after another) is replaced.
        """
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            return
        self._task = asyncio.create_task(self._run(), name="load-monitor")

    def stop(self) -> None:
        """Cancel the task (the app is shutting down)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - started - self._interval)
            try:
                waiters = self._waiters()
            except Exception:
                # A broken probe must not end the monitor: the lag is still worth having.
                if not self._probe_failed:
                    logger.exception("Load monitor: the pool waiters probe failed")
                    self._probe_failed = True
                waiters = 0
            self._signals.record(lag, waiters)
            EVENT_LOOP_LAG.set(lag)
            DB_POOL_WAITERS.set(waiters)
