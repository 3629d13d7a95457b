"""The worker app for the Elastic Beanstalk worker tier: /worker/* routes and GET /health only.

sqsd (EB's, or ``python -m devtools.local_sqsd`` locally) POSTs queue messages and cron tasks to it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings, get_settings
from app.error_handlers import install_error_handlers
from app.middleware.request_context import RequestContextMiddleware
from app.observability.logging import configure_logging, resolve_format
from app.resources import close_resources, open_resources
from app.routers import metrics, worker_routes


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the worker process's resources at startup and close them at shutdown."""
    app.state.resources = await open_resources(app.state.settings, role="worker")
    try:
        yield
    finally:
        await close_resources(app.state.resources)


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
