"""Health routes: liveness, readiness, and a detailed view for operators.

* `GET /`: what answers here (service, version, where to look next); from memory, like
  `/health`, and no health check's target.
* `GET /health`: liveness for the load balancer; answers from memory, touches nothing.
* `GET /health/ready`: the database (critical) and Redis (non-critical), each with its latency
  and a short timeout. 503 only when the database cannot be reached or the process is draining;
  `degraded` (200) when Redis is down or the database answers but a connection pool of this
  process is full (check status `busy`: requests wait for connections, some get 503
  service_busy, but restarting the instance would not help). A process checks its dependencies
  at most once per HEALTH_READY_CACHE_SECONDS however many probes arrive (concurrent probes
  share the check in flight), so no client can turn probes into database and Redis traffic;
  draining is read live.
* `GET /health/detailed`: version, environment, uptime, checks, breaker states, queue depths and
  pool statistics (per area of routes too); only for admins or clients inside
  OPS_ALLOWED_NETWORKS.

Bodies never carry exception text, hostnames or URLs: a failed check says `down`, and the reason
goes to the log.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.pool import QueuePool
from starlette.responses import Response

from app.config import Settings
from app.database import Database
from app.deps import SettingsDep, drain_of, get_current_user, resources_of
from app.error_handlers import error_response
from app.errors import Forbidden
from app.middleware.client_ip import client_address
from app.services.job_queue import JobQueue
from app.services.redis import RedisService

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])
_bearer = HTTPBearer(auto_error=False)

CheckStatus = Literal["ok", "busy", "down", "disabled"]


def _check(status: CheckStatus, started: float | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"status": status}
    if started is not None:
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


async def _check_database(database: Database, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            # With the pool full the probe runs on a one-off connection: it does not queue
            # behind requests, so a saturated pool reads `busy`, not `down`.
            status = await database.probe()
    except Exception as exc:
        # The reason is for operators (log), never for the probe's body.
        logger.warning("Readiness: database check failed (%s)", type(exc).__name__)
        return _check("down", started)
    if status == "busy":
        logger.warning("Readiness: the database answers but a connection pool is full")
    return _check(status, started)


async def _check_redis(redis: RedisService, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    if redis.client is None:
        return _check("disabled")
    started = time.perf_counter()
    latency = await redis.ping(timeout=timeout)
    if latency is None:
        return _check("down", started)
    return {"status": "ok", "latency_ms": round(latency * 1000, 2)}


Checks = dict[str, dict[str, Any]]


class ReadinessCache:
    """A process's latest dependency checks, reused for `ttl` seconds; concurrent callers share
    the one check in flight (single flight)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._checks: Checks | None = None
        self._checked_at = 0.0
        self._in_flight: asyncio.Future[Checks] | None = None

    async def get(self, check: Callable[[], Awaitable[Checks]]) -> Checks:
        """The cached checks while fresh, else the result of one `check()` shared by callers."""
        if self._checks is not None and time.monotonic() - self._checked_at < self._ttl:
            return self._checks
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._refresh(check))
        # Shielded: a probe that disconnects must not cancel the check the others wait for.
        return await asyncio.shield(self._in_flight)

    async def _refresh(self, check: Callable[[], Awaitable[Checks]]) -> Checks:
        try:
            checks = await check()
            self._checks, self._checked_at = checks, time.monotonic()
            return checks
        finally:
            self._in_flight = None


def _readiness_cache(app: FastAPI, settings: Settings) -> ReadinessCache:
    cache: ReadinessCache | None = getattr(app.state, "readiness_cache", None)
    if cache is None:
        cache = app.state.readiness_cache = ReadinessCache(settings.health_ready_cache_seconds)
    return cache


async def _readiness(request: Request, settings: Settings) -> tuple[str, Checks]:
    """The overall status (ready, degraded, not_ready, draining) and the individual checks."""
    timeout = settings.health_check_timeout_seconds
    resources = resources_of(request.app)

    async def check() -> Checks:
        database, redis = await asyncio.gather(
            _check_database(resources.database, timeout), _check_redis(resources.redis, timeout)
        )
        return {"database": database, "redis": redis}

    checks = await _readiness_cache(request.app, settings).get(check)
    database, redis = checks["database"], checks["redis"]
    drain = drain_of(request.app)
    if drain is not None and drain.draining:
        return "draining", checks
    if database["status"] == "down":
        return "not_ready", checks
    if database["status"] == "busy" or redis["status"] == "down":
        return "degraded", checks
    return "ready", checks


@router.get("/")
async def service_index(settings: SettingsDep) -> dict[str, Any]:
    """The service's name and version, and links to its health routes (and to the API docs
    when they are served). Touches no dependency."""
    links = {"health": "/health", "readiness": "/health/ready"}
    if settings.docs_enabled:
        links["docs"] = "/docs"
    return {"service": settings.app_name, "version": settings.app_version, "links": links}


@router.get("/health")
async def liveness() -> dict[str, str]:
    """Liveness: the process answers. Touches no dependency, so a database outage never makes
    the load balancer replace healthy instances."""
    return {"status": "ok"}


@router.get("/health/ready", response_model=None)
async def readiness(request: Request, settings: SettingsDep) -> Response | dict[str, Any]:
    """Readiness: 200 `ready`, or `degraded` when Redis is down or the database answers but a
    connection pool is full; 503 when the database is unreachable or the process is draining
    for shutdown."""
    status, checks = await _readiness(request, settings)
    if status in ("not_ready", "draining"):
        message = (
            "The server is shutting down."
            if status == "draining"
            else "A critical dependency is unavailable."
        )
        return error_response(
            503, status, message, headers={"Cache-Control": "no-store"}, checks=checks
        )
    return {"status": status, "checks": checks}


async def require_ops_access(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Operators only: a client inside OPS_ALLOWED_NETWORKS, or an admin's bearer token."""
    if credentials is not None:
        # The account behind the token is checked too: a demoted admin loses access.
        if (await get_current_user(request, credentials)).role == "admin":
            return
        raise Forbidden("Administrator access is required.")
    # Read through our own proxies exactly as the rate limiter reads it (hops or trusted CIDRs).
    ip = client_address(request.scope, settings)
    if ip is not None and any(
        ip.version == network.version and ip in network for network in settings.ops_allowed_networks
    ):
        return
    raise Forbidden("Administrator access is required.")


OpsAccess = Depends(require_ops_access)


def _pool_stats(database: Database) -> dict[str, Any]:
    pool = database.engine.sync_engine.pool
    # Each area's cap on the pool's connections (null without a local pool) and its use.
    areas = {
        area: {"limit": budget.limit, "in_use": budget.in_use}
        for area, budget in database.budgets.items()
    }
    if isinstance(pool, QueuePool):
        return {
            "class": type(pool).__name__,
            "size": pool.size(),
            "checked_out": pool.checkedout(),
            "idle": pool.checkedin(),
            "overflow": max(pool.overflow(), 0),
            "areas": areas,
        }
    # NullPool (DB_POOLER_CLIENT_POOL_SIZE=0 behind a pooler): nothing is kept here.
    return {"class": type(pool).__name__, "areas": areas}


async def _queue_depths(queue: JobQueue, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            result = await queue.depths()
    except Exception as exc:
        logger.warning("Health: queue depth check failed (%s)", type(exc).__name__)
        return {"status": "down"}
    return {"status": "ok", "depths": dict(result)}


@router.get("/health/detailed", dependencies=[OpsAccess])
async def detailed(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Operators' view: version, environment, uptime, checks, circuit breakers, queue depths
    and connection pool statistics. Admin token or an OPS_ALLOWED_NETWORKS client only."""
    status, checks = await _readiness(request, settings)
    resources = resources_of(request.app)
    return {
        "status": status,
        "version": settings.app_version,
        "environment": settings.environment,
        "uptime_seconds": round(time.monotonic() - resources.started_at, 1),
        "checks": checks,
        "redis": {
            "mode": settings.redis_mode if settings.redis_url else "memory",
            "available": resources.redis.available,
        },
        "circuit_breakers": resources.breakers.states(),
        "queues": await _queue_depths(resources.jobs, settings.health_check_timeout_seconds),
        "database_pool": _pool_stats(resources.database),
    }
