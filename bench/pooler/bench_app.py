"""The real web app (`app.main:app`, settings from the environment) for bench/pooler.

One thing differs from `uvicorn app.main:app`: the production worker's GC settings
(app.gunicorn_worker.tune_garbage_collector), applied once the lifespan has opened the
resources, as bench/read_routes does, in every configuration alike. The configurations differ
only in their environment (USE_EXTERNAL_POOLER, DB_POOLER_CLIENT_POOL_SIZE, DB_SSL).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.gunicorn_worker import tune_garbage_collector
from app.main import app

_app_lifespan = app.router.lifespan_context


@asynccontextmanager
async def _lifespan(application: FastAPI) -> AsyncIterator[None]:
    async with _app_lifespan(application):
        tune_garbage_collector()
        yield


app.router.lifespan_context = _lifespan

__all__ = ["app"]
