"""The job time budget (WORKER_JOB_TIMEOUT_SECONDS) in-process: a cron task stuck in the database
past it keeps nothing, answers 504 and is counted; its redelivery runs it once. The local queue's
jobs get the same budget and are retried like sqsd would. (tests/worker/test_job_budget_processes.py
has the worker app as a real process.)"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import asyncpg
from prometheus_client import REGISTRY
from sqlalchemy import select

from app.main import create_app
from app.models import Assessment, Attempt, FailedJob, ProcessedJob, User
from app.models.base import utcnow
from tests.conftest import make_settings
from tests.support.database import asyncpg_dsn
from tests.support.fake_upstream import FakeUpstream
from tests.support.moto_server import MotoServer
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import QueuePair
from tests.support.wait import wait_until
from tests.worker.helpers import count, loopback_client, post_cron, running_worker_app

BUDGET_SECONDS = 1.0
UPSERT = "/vectors/upsert"


def timeouts_counted(task: str) -> float:
    """This process's hiringpro_worker_job_timeouts_total for ``task``."""
    value = REGISTRY.get_sample_value("hiringpro_worker_job_timeouts_total", {"task": task})
    return value or 0.0


@asynccontextmanager
async def writes_blocked(url: str, table: str) -> AsyncIterator[None]:
    """Hold a SHARE lock on ``table`` from a direct connection: reads go on, writes wait."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(f"LOCK TABLE {table} IN SHARE MODE")
        yield
        await transaction.rollback()
    finally:
        await connection.close()


async def test_a_cron_task_stuck_past_its_budget_keeps_nothing_and_runs_on_redelivery(
    tmp_path: Path, database_url: str, postgres_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    """cleanup-sessions abandons an expired attempt, then waits on a lock (pruning processed
    jobs) past its budget: the abandonment is rolled back with the rest."""
    settings = sqs_settings(
        tmp_path, database_url, moto, queues, worker_job_timeout_seconds=BUDGET_SECONDS
    )
    scheduled = "2026-05-01T18:00:00Z"
    async with running_worker_app(settings) as app, loopback_client(app) as client:
        async with app.state.resources.database.sessionmaker() as session:
            user = User(email="late@example.com", password_hash="x", full_name="Late")
            test = Assessment(title="Python", duration_minutes=30)
            session.add_all([user, test])
            await session.flush()
            attempt = Attempt(
                test_id=test.id, user_id=user.id, expires_at=utcnow() - timedelta(hours=2)
            )
            session.add(attempt)
            await session.commit()
            attempt_id = attempt.id

        async def attempt_status() -> str:
            async with app.state.resources.database.sessionmaker() as session:
                status: str = (
                    await session.scalars(select(Attempt.status).where(Attempt.id == attempt_id))
                ).one()
            return status

        counted = timeouts_counted("cleanup-sessions")
        async with writes_blocked(postgres_url, "processed_jobs"):
            response = await post_cron(client, "cleanup-sessions", scheduled)
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "job_timeout"
        assert response.headers["Retry-After"].isdigit()
        assert timeouts_counted("cleanup-sessions") == counted + 1
        assert await attempt_status() == "in_progress"
        assert await count(app, ProcessedJob) == 0
        assert await count(app, FailedJob) == 0

        # sqsd delivers it again (a receive count of 2); the database is free now.
        again = await post_cron(client, "cleanup-sessions", scheduled, receive_count=2)
        assert (again.status_code, again.json()["status"]) == (200, "done")
        assert await attempt_status() == "abandoned"
        third = await post_cron(client, "cleanup-sessions", scheduled, receive_count=3)
        assert third.json()["status"] == "duplicate"
        assert await count(app, ProcessedJob) == 1


async def test_local_queue_jobs_get_the_budget_and_are_retried(
    tmp_path: Path, database_url: str, upstream: FakeUpstream
) -> None:
    """QUEUE_BACKEND=local: a vector-index job whose Pinecone answers after 30 s is cut off at
    the budget and retried; once Pinecone is fast again it is indexed, once."""
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        queue_backend="local",
        local_queue_retry_delay_seconds=0.05,
        # Room for the attempts that still find Pinecone slow after it was made fast.
        worker_max_receive_count=5,
        worker_job_timeout_seconds=BUDGET_SECONDS,
        vector_backend="pinecone",
        pinecone_api_key=upstream.api_key,
        pinecone_index_host=upstream.url,
        pinecone_timeout_seconds=60.0,
        # The cut-off upserts still land in the fake later: not where other tests look.
        pinecone_namespace=f"budget-{uuid.uuid4().hex}",
    )
    upstream.set_mode("healthy", delay=30.0)
    counted = timeouts_counted("vector-index")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        job_id = await app.state.resources.jobs.enqueue(
            "vector-index", {"candidate_id": 7, "text": "python fastapi"}
        )

        async def retried() -> bool:
            return upstream.calls(UPSERT) >= 2

        # A second upsert: the first run was cut off and the job came back.
        await wait_until(retried, within=2 * BUDGET_SECONDS + 1, what="a retry")
        upstream.set_mode("healthy")

        async def indexed() -> bool:
            return await count(app, ProcessedJob, ProcessedJob.key == f"job:{job_id}") == 1

        await wait_until(indexed, within=5 * BUDGET_SECONDS + 1, what="the job done")
        async with app.state.resources.database.sessionmaker() as session:
            status = (await session.scalars(select(ProcessedJob.status))).one()
        assert status == "done"
        assert await count(app, FailedJob) == 0
        assert timeouts_counted("vector-index") >= counted + 1
