"""The Hiring Pro web app: create_app(), its lifespan, middleware and routers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings, get_settings
from app.error_handlers import install_error_handlers
from app.middleware.body_limit import BodyLimitMiddleware
from app.middleware.cache_invalidation import CacheInvalidationMiddleware
from app.middleware.concurrency_limit import ConcurrencyLimitMiddleware
from app.middleware.load_shedder import LoadShedderMiddleware
from app.middleware.rate_limiter import RateLimitMiddleware
from app.middleware.request_context import RequestContextMiddleware
from app.middleware.shutdown import DrainState, ShutdownMiddleware
from app.observability.logging import configure_logging, resolve_format
from app.resources import close_resources, open_resources
from app.routers import (
    admin,
    admin_users,
    assessments,
    auth,
    breakers,
    health,
    jobs,
    metrics,
    notifications,
    profile,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the process's resources at startup and close them at shutdown."""
    settings: Settings = app.state.settings
    app.state.resources = await open_resources(settings, role="web")
    try:
        yield
    finally:
        # Readiness turns 503 and new requests are refused; running ones keep their resources.
        app.state.drain.refuse_new()
        await app.state.drain.wait_idle(settings.shutdown_drain_timeout_seconds)
        await close_resources(app.state.resources)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app for `settings` (the environment's when omitted)."""
    settings = settings or get_settings()
    settings.check_web_app()
    configure_logging(settings.log_level, resolve_format(settings.log_format, settings.environment))
    docs = settings.docs_enabled
    app = FastAPI(
        title=settings.app_name,
        version=settings.app_version,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Bumps the cache tags of committed writes before their response starts.
    app.add_middleware(CacheInvalidationMiddleware)
    # Inside the rate limiter: a request refused per minute (cheap, often without a Redis call)
    # never takes a lease, and a lease is held only by requests that will run.
    app.add_middleware(ConcurrencyLimitMiddleware, settings=settings)
    app.add_middleware(RateLimitMiddleware, settings=settings)
    # Bodies over MAX_REQUEST_BODY_BYTES are refused unread; the resume upload has its own limit.
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_request_body_bytes,
        own_limit_paths=("/api/profile/resume",),
    )
    # Sheds by priority before a request costs a Redis call or its body is read; inside the
    # shutdown middleware, so a closing process refuses before anything queues here.
    app.add_middleware(LoadShedderMiddleware, settings=settings)
    # Added last = outermost: request context wraps everything, then shutdown draining.
    app.state.drain = DrainState()
    app.add_middleware(ShutdownMiddleware, drain=app.state.drain)
    app.add_middleware(RequestContextMiddleware, access_log=settings.enable_request_logging)
    for router in (
        health.router,
        metrics.router,
        auth.router,
        profile.router,
        jobs.router,
        assessments.router,
        notifications.router,
        admin.router,
        admin_users.router,
        breakers.router,
    ):
        app.include_router(router)
    return app


app = create_app()
