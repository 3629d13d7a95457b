"""A small app whose one cached route counts its recomputations in Redis (the stampede tests).

Run by uvicorn as `tests.services.cache.stampede_app:create_stampede_app` (factory, settings from
the environment). The computation INCRs `STAMPEDE_COUNTER` and takes a while, so concurrent misses
overlap; the counter is what the test reads from outside the processes. While `STAMPEDE_HOLD`
exists the computation does not finish, so a test can observe what other callers are served
meanwhile.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app.config import Settings
from app.http_cache import cached_response
from app.services.cache import Cache, Namespace
from app.services.redis import RedisService
from tests.support.wait import wait_until

STAMPEDE = Namespace("stampede_test")
STAMPEDE_KEY = "hot"
STAMPEDE_COUNTER = "stampede-test:computations"
STAMPEDE_HOLD = "stampede-test:hold"
COMPUTE_SECONDS = 0.3


async def hot_value(request: Request) -> Response:
    cache: Cache = request.app.state.cache
    service: RedisService = request.app.state.redis
    settings: Settings = request.app.state.settings
    client = cast(Any, service.client)

    async def released() -> bool:
        return not await client.exists(STAMPEDE_HOLD)

    async def compute() -> bytes:
        number = await client.incr(STAMPEDE_COUNTER)
        # Held past the lock's TTL, another caller would recompute: the test fails either way.
        await wait_until(
            released, within=settings.cache_lock_ttl_seconds, what="the test to release the hold"
        )
        await asyncio.sleep(COMPUTE_SECONDS)
        return orjson.dumps({"computation": number})

    return await cached_response(request, cache, STAMPEDE, STAMPEDE_KEY, compute)


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def build_stampede_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.redis = RedisService(settings, client_name="cache-stampede-test")
        await app.state.redis.start()
        app.state.cache = Cache(settings, app.state.redis)
        try:
            yield
        finally:
            await app.state.redis.close()

    return Starlette(
        routes=[Route("/value", hot_value), Route("/health", health)], lifespan=lifespan
    )


def create_stampede_app() -> Starlette:
    """uvicorn factory: settings from the environment."""
    return build_stampede_app(Settings())
