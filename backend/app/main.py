"""The Hiring Pro web app: create_app(), its lifespan, middleware and routers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings, get_settings
from app.database import Database
from app.errors import install_error_handlers
from app.middleware.rate_limiter import RateLimitMiddleware
from app.routers import admin, auth, jobs, notifications, profile, tests
from app.security import password_hasher
from app.services.auth import PasswordService
from app.services.redis import RedisService
from app.services.storage import create_storage


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create the process's resources at startup and close them at shutdown."""
    settings: Settings = app.state.settings
    app.state.database = Database.create(settings, role="web")
    app.state.storage = create_storage(settings)
    app.state.redis = RedisService(settings)
    await app.state.redis.start()
    try:
        yield
    finally:
        await app.state.redis.close()
        await app.state.database.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the web app for `settings` (the environment's when omitted)."""
    settings = settings or get_settings()
    app = FastAPI(title=settings.app_name, version=settings.app_version, lifespan=lifespan)
    app.state.settings = settings
    app.state.passwords = PasswordService(password_hasher(settings))
    install_error_handlers(app)
    app.add_middleware(RateLimitMiddleware, settings=settings)
    for router in (auth.router, profile.router, jobs.router, tests.router, notifications.router, admin.router):
        app.include_router(router)
    return app


app = create_app()
