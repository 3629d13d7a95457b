"""Process resources shared by the web and worker apps: opened at startup, closed at shutdown.

The apps keep one `Resources` on `app.state.resources`; routes and middleware reach it through
app.deps only.
"""

import time
from dataclasses import dataclass

import httpx

from app.config import Settings
from app.database import Database
from app.domain.auth import PasswordService
from app.domain.token_versions import TokenVersions
from app.observability.metrics import instrument_engine
from app.security import VerifiedTokens
from app.services.ai import AIService, create_ai
from app.services.cache import Cache
from app.services.circuit_breaker import BreakerRegistry, create_breakers
from app.services.http_client import create_http_client
from app.services.job_queue import Delivery, JobQueue, LocalJobQueue, Outcome
from app.services.redis import RedisService
from app.services.sqs_queue import SQSJobQueue
from app.services.storage import Storage, close_storage, create_storage
from app.services.vector_search import VectorIndex, create_vector_index
from app.worker.context import WorkerContext
from app.worker.delivery import process


@dataclass(eq=False)
class Resources:
    """Everything a process opens once: connections, clients and the adapters built on them."""

    settings: Settings
    database: Database
    redis: RedisService
    cache: Cache
    breakers: BreakerRegistry
    http: httpx.AsyncClient
    storage: Storage
    ai: AIService
    vector_index: VectorIndex
    jobs: JobQueue
    passwords: PasswordService
    # The account states bearer tokens are checked against (built on the database and Redis
    # above; it holds no connection of its own, so nothing to close).
    token_versions: TokenVersions
    # Signatures of access tokens, verified once per token and process.
    access_tokens: VerifiedTokens
    started_at: float

    def worker_context(self) -> WorkerContext:
        """What the worker's task handlers may use."""
        return WorkerContext(
            settings=self.settings,
            database=self.database,
            cache=self.cache,
            storage=self.storage,
            ai=self.ai,
            vector_index=self.vector_index,
            jobs=self.jobs,
        )


async def open_resources(settings: Settings, *, role: str) -> Resources:
    """Open the database, Redis, cache, breakers, HTTP client, adapters and job queue.

    `role` (web or worker) tags the process's Postgres and Redis connections.
    """
    database = Database.create(settings, role=role)
    await database.open_read_pool(settings, role=role)
    instrument_engine(database.engine)
    redis = RedisService(settings, client_name=f"hiring-pro-{role}")
    await redis.start()
    breakers = create_breakers(settings, redis)
    http = create_http_client(settings)
    resources: Resources

    async def run_locally(delivery: Delivery) -> Outcome:
        return await process(resources.worker_context(), delivery)

    jobs: JobQueue
    if settings.queue_backend == "sqs":
        sqs = SQSJobQueue(settings)
        await sqs.start()
        jobs = sqs
    else:
        # Local jobs run this process's handlers with the resources below.
        jobs = LocalJobQueue(settings, run_locally)
    resources = Resources(
        settings=settings,
        database=database,
        redis=redis,
        # The worker needs the cache too: its jobs invalidate the web tier's cached listings.
        cache=Cache(settings, redis),
        breakers=breakers,
        http=http,
        storage=create_storage(settings, breakers, http),
        ai=create_ai(settings, http, breakers),
        vector_index=create_vector_index(settings, http, breakers),
        jobs=jobs,
        passwords=PasswordService.for_settings(settings),
        token_versions=TokenVersions(settings, database, redis),
        access_tokens=VerifiedTokens(settings.jwt_signing_key),
        started_at=time.monotonic(),
    )
    return resources


async def close_resources(resources: Resources) -> None:
    """Close what open_resources opened, queue first (local jobs still use the rest)."""
    await resources.jobs.close()
    await resources.breakers.close()
    await close_storage(resources.storage)
    await resources.http.aclose()
    resources.passwords.close()
    await resources.redis.close()
    await resources.database.dispose()
