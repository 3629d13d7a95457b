"""The worker app for the Elastic Beanstalk worker tier: /worker/* routes and GET /health only.

sqsd (EB's, or ``python -m app.local_sqsd``) POSTs queue messages and cron tasks to it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings, get_settings
from app.database import Database
from app.errors import install_error_handlers
from app.logging_config import configure_logging, resolve_format
from app.middleware.request_context import RequestContextMiddleware
from app.routers import metrics, worker_routes
from app.services.ai import create_ai
from app.services.cache import Cache
from app.services.circuit_breaker import create_breakers
from app.services.http_client import create_http_client
from app.services.redis import RedisService
from app.services.storage import close_storage, create_storage
from app.services.vector_search import create_vector_index
from app.services.worker_tasks import open_job_queue


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the worker process's resources at startup and close them at shutdown."""
    settings: Settings = app.state.settings
    app.state.database = Database.create(settings, role="worker")
    app.state.redis = RedisService(settings, client_name="hiring-pro-worker")
    await app.state.redis.start()
    # Handlers invalidate the web tier's cached candidate listings after profile changes.
    app.state.cache = Cache(settings, app.state.redis)
    app.state.breakers = create_breakers(settings, app.state.redis)
    app.state.http = create_http_client(settings)
    app.state.storage = create_storage(settings, app.state.breakers)
    app.state.ai = create_ai(settings, app.state.http, app.state.breakers)
    app.state.vector_index = create_vector_index(settings, app.state.http, app.state.breakers)
    # Handlers queue follow-up jobs (vector indexing) through it.
    app.state.jobs = await open_job_queue(settings, app.state)
    try:
        yield
    finally:
        await app.state.jobs.close()
        await app.state.breakers.close()
        await close_storage(app.state.storage)
        await app.state.http.aclose()
        await app.state.redis.close()
        await app.state.database.dispose()


def create_worker_app(settings: Settings | None = None) -> FastAPI:
    """Build the worker app for `settings` (the environment's when omitted)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, resolve_format(settings.log_format, settings.environment))
    app = FastAPI(
        title=f"{settings.app_name} worker",
        version=settings.app_version,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Request ids, one access line and request metrics per delivery, as in the web app.
    app.add_middleware(RequestContextMiddleware, access_log=settings.enable_request_logging)
    app.include_router(worker_routes.router)
    app.include_router(metrics.router)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers (touches nothing)."""
        return {"status": "ok"}

    return app


app = create_worker_app()
