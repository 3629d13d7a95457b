"""The five apps of the rate-limit benchmark: one trivial endpoint, five ways to limit it.

Chosen by BENCH_VARIANT (bare | slowapi | fastapi_limiter | naive | ours); Redis at
BENCH_REDIS_URL. Every limiter keys by the right-most X-Forwarded-For entry (one trusted proxy)
and allows 200 requests a minute per client, the `read` tier, so the benchmark's 10,000 clients
are all admitted and every request pays for a full decision.
"""

import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.error_handlers import error_response
from app.gunicorn_worker import tune_garbage_collector
from app.middleware.rate_limiter import RateLimitMiddleware
from app.services.redis import RedisService

REDIS_URL = os.environ["BENCH_REDIS_URL"]
LIMIT = "200/minute"


def client_of(request: Request) -> str:
    return request.headers.get("x-forwarded-for", "").rsplit(",", 1)[-1].strip()


def bare() -> FastAPI:
    app = FastAPI()

    @app.get("/api/jobs")
    async def jobs(request: Request) -> dict[str, Any]:
        return {"jobs": []}

    return app


def with_slowapi() -> FastAPI:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded

    limiter = Limiter(key_func=client_of, storage_uri=REDIS_URL)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/api/jobs")
    @limiter.limit(LIMIT)
    async def jobs(request: Request) -> dict[str, Any]:
        return {"jobs": []}

    return app


def with_fastapi_limiter() -> FastAPI:
    from fastapi_limiter.depends import RateLimiter
    from pyrate_limiter import BucketFactory, Duration, Limiter, Rate, RateItem
    from pyrate_limiter.buckets.redis_bucket import RedisBucket

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    rates = [Rate(200, Duration.MINUTE)]

    class PerClientBuckets(BucketFactory):
        """fastapi-limiter 0.2 keys one shared bucket by default: one bucket per client here."""

        def __init__(self) -> None:
            self.buckets: dict[str, RedisBucket] = {}
            self.script_hash = ""

        def wrap_item(self, name: str, weight: int = 1) -> RateItem:
            return RateItem(name, time.time_ns() // 1_000_000, weight=weight)

        async def get(self, item: RateItem) -> RedisBucket:  # type: ignore[override]
            bucket = self.buckets.get(item.name)
            if bucket is None:
                bucket = await RedisBucket.init(rates, client, f"fl:{item.name}")
                self.buckets[item.name] = bucket
            return bucket

    limiter = Limiter(PerClientBuckets())

    async def identifier(request: Request) -> str:
        return client_of(request)

    app = FastAPI()

    @app.get(
        "/api/jobs",
        dependencies=[Depends(RateLimiter(limiter=limiter, identifier=identifier))],
    )
    async def jobs(request: Request) -> dict[str, Any]:
        return {"jobs": []}

    return app


NAIVE_LUA = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens = capacity
if state[1] then
  tokens = math.min(capacity, tonumber(state[1]) + (t - tonumber(state[2])) * rate)
end
if tokens < 1 then return 0 end
redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'ts', t)
redis.call('EXPIRE', KEYS[1], 60)
return 1
"""


class NaiveLimiter:
    """The obvious pure-ASGI limiter: one EVALSHA per request through redis.asyncio."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.redis = redis.asyncio.Redis.from_url(REDIS_URL)
        self.script = self.redis.register_script(NAIVE_LUA)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        forwarded = dict(scope["headers"]).get(b"x-forwarded-for", b"").decode()
        key = "naive:" + forwarded.rsplit(",", 1)[-1].strip()
        if await self.script(keys=[key], args=[200, 200 / 60]):
            await self.app(scope, receive, send)
        else:
            await error_response(429, "rate_limited", "Too many requests.")(scope, receive, send)


def with_naive() -> FastAPI:
    app = bare()
    app.add_middleware(NaiveLimiter)
    return app


def with_ours() -> FastAPI:
    # Production settings: default tiers, batching, hiredis, one trusted proxy hop.
    settings = Settings(
        environment="production",
        jwt_secret=secrets.token_urlsafe(48),
        allow_sqlite=True,  # the limiter alone: no database is opened
        redis_url=REDIS_URL,
        trusted_proxy_count=1,
    )

    redis = RedisService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await redis.start()
        yield
        await redis.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/jobs")
    async def jobs(request: Request) -> dict[str, Any]:
        return {"jobs": []}

    app.add_middleware(RateLimitMiddleware, settings=settings, redis=redis)
    return app


VARIANTS = {
    "bare": bare,
    "slowapi": with_slowapi,
    "fastapi_limiter": with_fastapi_limiter,
    "naive": with_naive,
    "ours": with_ours,
}

app = VARIANTS[os.environ["BENCH_VARIANT"]]()
# Every variant runs with the production worker's GC settings (app/gunicorn_worker.py).
tune_garbage_collector()
