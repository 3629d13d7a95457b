"""Process resources shared by the web and worker apps: opened at startup, closed at shutdown."""

from starlette.datastructures import State

from app.config import Settings
from app.database import Database
from app.metrics import instrument_engine
from app.services.ai import create_ai
from app.services.cache import Cache
from app.services.circuit_breaker import create_breakers
from app.services.http_client import create_http_client
from app.services.redis import RedisService
from app.services.storage import close_storage, create_storage
from app.services.vector_search import create_vector_index
from app.services.worker_tasks import open_job_queue


async def open_resources(state: State, settings: Settings, *, role: str) -> None:
    """Put the database, Redis, cache, breakers, HTTP client, adapters and queue on `state`.

    `role` (web or worker) tags the process's Postgres and Redis connections.
    """
    state.database = Database.create(settings, role=role)
    await state.database.open_read_pool(settings, role=role)
    instrument_engine(state.database.engine)
    state.redis = RedisService(settings, client_name=f"hiring-pro-{role}")
    await state.redis.start()
    # The worker needs the cache too: its handlers invalidate the web tier's cached listings.
    state.cache = Cache(settings, state.redis)
    state.breakers = create_breakers(settings, state.redis)
    state.http = create_http_client(settings)
    state.storage = create_storage(settings, state.breakers, state.http)
    state.ai = create_ai(settings, state.http, state.breakers)
    state.vector_index = create_vector_index(settings, state.http, state.breakers)
    # Local jobs run with the resources above; SQS opens its client.
    state.jobs = await open_job_queue(settings, state)


async def close_resources(state: State) -> None:
    """Close what open_resources opened, queue first (local jobs still use the rest)."""
    await state.jobs.close()
    await state.breakers.close()
    await close_storage(state.storage)
    await state.http.aclose()
    await state.redis.close()
    await state.database.dispose()
