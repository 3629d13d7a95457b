"""A tiny app behind the real rate limiter and RedisService, for in-process and uvicorn tests.

Run by uvicorn as `tests.middleware.rate_limiter.limiter_app:create_limiter_app` (factory),
configured by the environment like the real app. Its routes do nothing, so tests measure only the
limiter.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.config import Settings
from app.middleware.rate_limiter import RateLimitMiddleware
from app.services.redis import RedisService


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def build_limiter_app(settings: Settings) -> Starlette:
    """The test app for `settings`; its lifespan starts and closes the limiter's RedisService."""
    redis = RedisService(settings, client_name="rate-limit-test")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await redis.start()
        try:
            yield
        finally:
            await redis.close()

    app = Starlette(
        routes=[
            Route("/api/jobs", ok),
            Route("/api/auth/login", ok, methods=["POST"]),
            Route("/api/admin/ai-generate", ok, methods=["POST"]),
            Route("/health", ok),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(RateLimitMiddleware, settings=settings, redis=redis)
    return app


def create_limiter_app() -> Starlette:
    """uvicorn factory: settings from the environment."""
    return build_limiter_app(Settings())
