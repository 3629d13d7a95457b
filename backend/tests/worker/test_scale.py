"""1,000 jobs through 2 local sqsd daemons and a worker app with 2 processes: each done once."""

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.models import EmailOutbox, FailedJob, ProcessedJob
from app.services.job_queue import JobMessage
from app.services.sqs_queue import SQSJobQueue
from tests.support.moto_server import MotoServer
from tests.support.sqs_server import QueuePair, drain
from tests.worker.conftest import sqs_settings
from tests.worker.processes import worker_env, worker_tier

pytestmark = pytest.mark.slow

JOBS = 1000
RESENT = 100


async def test_a_thousand_concurrent_jobs_are_each_processed_exactly_once(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    settings = sqs_settings(tmp_path, database_url, moto, queues)
    producer = SQSJobQueue(settings)
    await producer.start()
    try:
        job_ids = await asyncio.gather(
            *(
                producer.enqueue(
                    "email",
                    {"to": f"user{n}@example.com", "subject": f"Job {n}", "body": "Hello."},
                )
                for n in range(JOBS)
            )
        )
        assert len(set(job_ids)) == JOBS
        # A producer retrying sends it believes were lost: the same jobs as new SQS messages.
        queue = producer.client.queue(queues.name)
        await asyncio.gather(
            *(
                queue.send(
                    JobMessage(
                        "email", {"to": "x@example.com", "subject": "s", "body": "b"}, id=job_id
                    ),
                    path="/worker/email",
                )
                for job_id in job_ids[:RESENT]
            )
        )
    finally:
        await producer.close()

    from app.database import Database

    database = Database.create(settings)
    try:

        async def outbox_rows() -> int:
            async with database.sessionmaker() as session:
                return int(await session.scalar(select(func.count()).select_from(EmailOutbox)) or 0)

        env = worker_env(settings, moto, queues)
        with worker_tier(env, queues, tmp_path, workers=2, daemons=2, concurrency=20) as tier:
            deadline = time.monotonic() + 240
            while await outbox_rows() < JOBS:
                assert time.monotonic() < deadline, f"only {await outbox_rows()} of {JOBS} done"
                await asyncio.sleep(0.5)
            # Let the resent duplicates drain too before stopping the tier.
            while await asyncio.to_thread(_visible_or_in_flight, moto, queues) > 0:
                logs = "\n".join(process.log()[-3000:] for process in tier)
                assert time.monotonic() < deadline, f"the queue did not drain:\n{logs}"
                await asyncio.sleep(0.5)

        async with database.sessionmaker() as session:
            per_job = (
                await session.execute(
                    select(EmailOutbox.job_id, func.count()).group_by(EmailOutbox.job_id)
                )
            ).all()
            processed = await session.scalar(select(func.count()).select_from(ProcessedJob))
            failed = await session.scalar(select(func.count()).select_from(FailedJob))
    finally:
        await database.dispose()
    counts = dict(per_job)
    assert set(counts) == set(job_ids)
    assert set(counts.values()) == {1}
    assert processed == JOBS
    assert failed == 0
    assert drain(moto.url, queues.dlq_url) == []


def _visible_or_in_flight(moto: MotoServer, queues: QueuePair) -> int:
    from tests.support.sqs_server import sqs_client

    attributes = sqs_client(moto.url).get_queue_attributes(
        QueueUrl=queues.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
