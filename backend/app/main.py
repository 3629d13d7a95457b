"""The Hiring Pro web app: create_app(), its lifespan, middleware and routers."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings, get_settings
from app.database import Database
from app.errors import install_error_handlers
from app.logging_config import configure_logging, resolve_format
from app.metrics import instrument_engine
from app.middleware.rate_limiter import RateLimitMiddleware
from app.middleware.request_context import RequestContextMiddleware
from app.middleware.shutdown import DrainState, ShutdownMiddleware
from app.routers import admin, auth, health, jobs, metrics, notifications, profile, tests
from app.security import password_hasher
from app.services.ai import create_ai
from app.services.auth import PasswordService
from app.services.cache import Cache, CacheInvalidationMiddleware
from app.services.circuit_breaker import create_breakers
from app.services.http_client import create_http_client
from app.services.redis import RedisService
from app.services.storage import close_storage, create_storage
from app.services.vector_search import create_vector_index
from app.services.worker_tasks import open_job_queue


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the process's resources at startup and close them at shutdown."""
    settings: Settings = app.state.settings
    app.state.started_at = time.monotonic()
    app.state.database = Database.create(settings, role="web")
    instrument_engine(app.state.database.engine)
    app.state.redis = RedisService(settings)
    await app.state.redis.start()
    app.state.cache = Cache(settings, app.state.redis)
    app.state.breakers = create_breakers(settings, app.state.redis)
    app.state.http = create_http_client(settings)
    app.state.storage = create_storage(settings, app.state.breakers, app.state.http)
    app.state.ai = create_ai(settings, app.state.http, app.state.breakers)
    app.state.vector_index = create_vector_index(settings, app.state.http, app.state.breakers)
    app.state.jobs = await open_job_queue(settings, app.state)
    try:
        yield
    finally:
        # Readiness turns 503 and new requests are refused; running ones keep their resources.
        app.state.drain.refuse_new()
        await app.state.drain.wait_idle(settings.shutdown_drain_timeout_seconds)
        # Local jobs use the resources closed below; SQS: closes the client.
        await app.state.jobs.close()
        await app.state.breakers.close()
        await close_storage(app.state.storage)
        await app.state.http.aclose()
        await app.state.redis.close()
        await app.state.database.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app for `settings` (the environment's when omitted)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, resolve_format(settings.log_format, settings.environment))
    app = FastAPI(title=settings.app_name, version=settings.app_version, lifespan=lifespan)
    app.state.settings = settings
    app.state.passwords = PasswordService(password_hasher(settings))
    install_error_handlers(app)
    # Bumps the cache tags of committed writes before their response starts.
    app.add_middleware(CacheInvalidationMiddleware)
    app.add_middleware(RateLimitMiddleware, settings=settings)
    # Added last = outermost: request context wraps everything, then shutdown draining.
    app.state.drain = DrainState()
    app.add_middleware(ShutdownMiddleware, drain=app.state.drain)
    app.add_middleware(RequestContextMiddleware, access_log=settings.enable_request_logging)
    app.include_router(health.router)
    app.include_router(metrics.router)
    for router in (
        auth.router,
        profile.router,
        jobs.router,
        tests.router,
        notifications.router,
        admin.router,
    ):
        app.include_router(router)
    return app


app = create_app()
