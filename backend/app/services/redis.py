"""The process's Redis client (standalone, Sentinel or Cluster) and a small breaker around Redis.

One `RedisService` per process, in its resources (app.resources). Callers treat
`redis.RedisError` as "Redis unavailable": they call `mark_failure(exc)`, fall back to their
in-process behaviour, and skip Redis while `available` is False. The service logs the
transition once each way.
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import redis
import redis.asyncio
from prometheus_client import Gauge
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from app.config import Settings

logger = logging.getLogger(__name__)

RedisClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
ScriptArg = str | bytes | int | float

REDIS_AVAILABLE = Gauge(
    "hiringpro_redis_available",
    "1 when Redis is configured and reachable, 0 while in back-off (or not configured).",
    # Under gunicorn: the lowest value among live workers, so one worker cut off shows as 0.
    multiprocess_mode="livemin",
)


class RedisScript:
    """A Lua script run with EVALSHA, reloaded on NOSCRIPT (after a restart or failover)."""

    def __init__(self, service: "RedisService", lua: str) -> None:
        self._service = service
        self._lua = lua.encode()
        self.sha = hashlib.sha1(self._lua).hexdigest()

    async def __call__(self, keys: Sequence[str | bytes], args: Sequence[ScriptArg] = ()) -> Any:
        """Run the script. On Cluster all `keys` must share one {hash tag}. Raises RedisError."""
        client = self._service.client
        if client is None:
            raise redis.RedisError("Redis is not configured")
        try:
            return await cast(Any, client).evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # SCRIPT LOAD goes to every primary on Cluster, so any slot can run it afterwards.
            await cast(Any, client).script_load(self._lua)
            return await cast(Any, client).evalsha(self.sha, len(keys), *keys, *args)


class RedisService:
    """One client per process, plus a small breaker around Redis itself."""

    def __init__(self, settings: Settings, *, client_name: str = "hiring-pro-web") -> None:
        self._settings = settings
        self._client_name = client_name
        self._client: RedisClient | None = None
        self._sentinel: Sentinel | None = None
        self._down = False
        self._retry_at = 0.0
        self._backoff = settings.redis_backoff_seconds

    async def start(self) -> None:
        """Build the client from settings and check it once; never fails when Redis is down."""
        if not self._settings.redis_url:
            REDIS_AVAILABLE.set(0)
            logger.info("REDIS_URL not set: using in-process backends")
            return
        self._client = self._build_client(self._settings)
        REDIS_AVAILABLE.set(1)
        first_ping_timeout = max(1.0, self._settings.redis_connect_timeout_seconds)
        if await self.ping(timeout=first_ping_timeout) is not None:
            logger.info("Redis connected (mode=%s)", self._settings.redis_mode)

    async def close(self) -> None:
        """Close the client and its connection pool."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
        if self._sentinel is not None:
            for sentinel_client in self._sentinel.sentinels:
                await sentinel_client.aclose()
            self._sentinel = None

    @property
    def client(self) -> RedisClient | None:
        """The client, or None when REDIS_URL is unset (embedded memory mode)."""
        return self._client

    @property
    def available(self) -> bool:
        """Configured and not inside the back-off that follows a failure."""
        if self._client is None:
            return False
        return not self._down or time.monotonic() >= self._retry_at

    def mark_failure(self, exc: BaseException) -> None:
        """Start or extend the back-off; log "Redis unavailable" on the first failure only."""
        now = time.monotonic()
        if not self._down:
            self._down = True
            self._backoff = self._settings.redis_backoff_seconds
            REDIS_AVAILABLE.set(0)
            logger.warning(
                "Redis unavailable (%s: %s); using in-process fallbacks, retrying in %.1fs",
                type(exc).__name__,
                exc,
                self._backoff,
            )
        elif now >= self._retry_at:
            # A probe after the back-off failed again: wait longer next time.
            self._backoff = min(self._backoff * 2, self._settings.redis_backoff_max_seconds)
        self._retry_at = now + self._backoff

    def mark_success(self) -> None:
        """End the back-off; log "Redis available again" once."""
        if self._down:
            self._down = False
            self._backoff = self._settings.redis_backoff_seconds
            REDIS_AVAILABLE.set(1)
            logger.warning("Redis available again")

    async def ping(self, timeout: float = 0.5) -> float | None:  # noqa: ASYNC109 (the interface)
        """Round-trip time of PING in seconds, or None when Redis is down or not configured."""
        if self._client is None:
            return None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await cast(Any, self._client).ping()
        except (redis.RedisError, TimeoutError) as exc:
            self.mark_failure(exc)
            return None
        self.mark_success()
        return time.perf_counter() - started

    def script(self, lua: str) -> RedisScript:
        """A callable running `lua` with EVALSHA (see RedisScript)."""
        return RedisScript(self, lua)

    def _build_client(self, settings: Settings) -> RedisClient:
        url = cast(str, settings.redis_url)
        # Retry only connection errors, once and quickly: a timed-out command may have run on the
        # server (a rate-limit script would consume twice), and long retries are what the breaker
        # exists to avoid.
        retry = Retry(
            ExponentialWithJitterBackoff(
                base=settings.redis_retry_backoff_base_seconds,
                cap=settings.redis_retry_backoff_cap_seconds,
            ),
            retries=settings.redis_retry_attempts,
            supported_errors=(RedisConnectionError,),
        )
        # hiredis is redis-py's default parser whenever it is installed (it is pinned).
        options: dict[str, Any] = {
            "socket_timeout": settings.redis_socket_timeout_seconds,
            "socket_connect_timeout": settings.redis_connect_timeout_seconds,
            "health_check_interval": settings.redis_health_check_interval_seconds,
            "retry": retry,
            "retry_on_error": [RedisConnectionError],
            "client_name": self._client_name,
        }
        if settings.redis_mode == "cluster":
            # max_connections is per node on Cluster.
            return redis.asyncio.RedisCluster.from_url(
                url, max_connections=settings.redis_pool_size, **options
            )
        if settings.redis_mode == "sentinel":
            return self._sentinel_client(settings, url, options)
        # A full pool makes callers wait (up to the socket timeout) instead of failing at once.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.redis_pool_size,
            timeout=settings.redis_socket_timeout_seconds,
            **options,
        )
        return redis.asyncio.Redis.from_pool(pool)

    def _sentinel_client(
        self, settings: Settings, url: str, options: dict[str, Any]
    ) -> redis.asyncio.Redis:
        # REDIS_URL supplies credentials and db; the master's address comes from the sentinels.
        url_options = parse_url(url)  # type: ignore[no-untyped-call]
        sentinels = [
            (host.rsplit(":", 1)[0], int(host.rsplit(":", 1)[1]))
            for host in (part.strip() for part in settings.redis_sentinel_hosts.split(","))
            if host
        ]
        if not sentinels:
            raise ValueError("REDIS_MODE=sentinel needs REDIS_SENTINEL_HOSTS (host:port,...)")
        sentinel = self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels,
            sentinel_kwargs={
                "socket_timeout": settings.redis_socket_timeout_seconds,
                "socket_connect_timeout": settings.redis_connect_timeout_seconds,
            },
        )
        master: redis.asyncio.Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            db=url_options.get("db", 0),
            username=url_options.get("username"),
            password=url_options.get("password"),
            max_connections=settings.redis_pool_size,
            **options,
        )
        return master
