"""Prometheus metrics of the HTTP layer and the database pool, and the /metrics exposition.

Other modules define their own metrics at module level (rate limiter, breakers, Redis, cache,
queue), all named `hiringpro_*`; they reach /metrics through prometheus_client's default registry.

Under gunicorn every worker is a separate process: `gunicorn.conf.py` sets
PROMETHEUS_MULTIPROC_DIR (wiped when the master starts) before any worker imports
prometheus_client, so each process writes its values to files there, /metrics aggregates all
files, and the master's `child_exit` hook calls `mark_process_dead` so the live gauges of dead
workers disappear. Without that variable (a single uvicorn process, tests) the default registry
is served as is.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

HTTP_REQUESTS = Counter(
    "hiringpro_http_requests_total",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "hiringpro_http_request_duration_seconds",
    "HTTP request latency (first byte received to response finished) by method, route template "
    "and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "hiringpro_http_requests_in_progress",
    "HTTP requests being handled right now (all live processes).",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "hiringpro_db_pool_size",
    "Configured connection pool size (0 without one: NullPool, DB_POOLER_CLIENT_POOL_SIZE=0).",
    multiprocess_mode="livesum",
)
DB_CONNECTIONS_CHECKED_OUT = Gauge(
    "hiringpro_db_connections_checked_out",
    "Database connections currently checked out of the pool.",
    multiprocess_mode="livesum",
)
DB_CONNECTIONS_OPENED = Counter(
    "hiringpro_db_connections_opened_total",
    "New database connections opened (high rates mean churn or an external pooler).",
)
# Overload protection (app/services/overload): the per-process adaptive limit and its load signals.
OVERLOAD_LIMIT = Gauge(
    "hiringpro_overload_limit",
    "Adaptive concurrency limit of the load shedder (sum over live processes).",
    multiprocess_mode="livesum",
)
OVERLOAD_IN_FLIGHT = Gauge(
    "hiringpro_overload_in_flight",
    "Requests admitted by the load shedder and still running, by priority.",
    ["priority"],
    multiprocess_mode="livesum",
)
OVERLOAD_QUEUED = Gauge(
    "hiringpro_overload_queued",
    "Requests waiting in the load shedder's queue, by priority.",
    ["priority"],
    multiprocess_mode="livesum",
)
OVERLOAD_SHED = Counter(
    "hiringpro_overload_shed_total",
    "Requests shed with 503 overloaded, by priority and reason.",
    ["priority", "reason"],
)
OVERLOAD_OVERDUE = Counter(
    "hiringpro_overload_overdue_total",
    "Queued requests that waited their queue's whole timeout and then ran outside the limit.",
    ["priority"],
)
EVENT_LOOP_LAG = Gauge(
    "hiringpro_event_loop_lag_seconds",
    "Event-loop scheduling delay last measured by the load monitor (worst live process).",
    multiprocess_mode="livemax",
)
DB_POOL_WAITERS = Gauge(
    "hiringpro_db_pool_waiters",
    "Requests waiting for a database connection, last sampled by the load monitor.",
    multiprocess_mode="livesum",
)
# Password hashing (app/domain/auth.py PasswordService) and the per-identity concurrency limit
# (app/middleware/concurrency_limit.py).
PASSWORD_HASHES_IN_FLIGHT = Gauge(
    "hiringpro_password_hashes_in_flight",
    "Password hashes (argon2) running in the hash threads (all live processes).",
    multiprocess_mode="livesum",
)
PASSWORD_HASHES_QUEUED = Gauge(
    "hiringpro_password_hashes_queued",
    "Password hashes waiting for a hash thread (all live processes).",
    multiprocess_mode="livesum",
)
PASSWORD_HASHES_SHED = Counter(
    "hiringpro_password_hashes_shed_total",
    "Logins, registrations and resets answered 503 login_overloaded, by reason (queue_full: "
    "refused on arrival; wait_timeout: queued too long without starting).",
    ["reason"],
)
CONCURRENCY_LIMIT_DECISIONS = Counter(
    "hiringpro_concurrency_limit_decisions_total",
    "Per-identity concurrent-request decisions by identity (user, address), outcome (admitted, "
    "refused) and source (redis, local = no Redis configured, fallback = Redis down).",
    ["identity", "outcome", "source"],
)

_Observer = tuple[Callable[[], None], Callable[[float], None]]


class RequestMetrics:
    """Records one finished request; caches the labelled children (labels() is not free)."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], _Observer] = {}

    def started(self) -> None:
        HTTP_REQUESTS_IN_PROGRESS.inc()

    def finished(self, method: str, route: str, status: int, duration: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            labels = (method, route, str(status))
            child = (
                HTTP_REQUESTS.labels(*labels).inc,
                HTTP_REQUEST_DURATION.labels(*labels).observe,
            )
            self._children[key] = child
        HTTP_REQUESTS_IN_PROGRESS.dec()
        child[0]()
        child[1](duration)


def instrument_engine(engine: AsyncEngine) -> None:
    """Track the engine's pool: size, checked-out connections and connections opened."""
    pool = engine.sync_engine.pool
    # QueuePool has a size; NullPool (DB_POOLER_CLIENT_POOL_SIZE=0) keeps nothing open.
    DB_POOL_SIZE.set(pool.size() if isinstance(pool, QueuePool) else 0)

    def on_connect(_dbapi_connection: Any, _record: Any) -> None:
        DB_CONNECTIONS_OPENED.inc()

    def on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        record.info["checked_out"] = True
        DB_CONNECTIONS_CHECKED_OUT.inc()

    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        # The pool also "checks in" a record whose connect failed (database or pooler down),
        # which was never checked out.
        if record.info.pop("checked_out", False):
            DB_CONNECTIONS_CHECKED_OUT.dec()

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "checkout", on_checkout)
    event.listen(engine.sync_engine, "checkin", on_checkin)


def render_metrics(multiproc_dir: Path | None) -> tuple[bytes, str]:
    """The exposition text and its content type: every process's files, or this process."""
    if multiproc_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int, multiproc_dir: Path) -> None:
    """Drop a dead worker's live gauges (gunicorn `child_exit`)."""
    multiprocess.mark_process_dead(pid, str(multiproc_dir))  # type: ignore[no-untyped-call]
