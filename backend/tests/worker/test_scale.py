"""1,000 jobs through 2 local sqsd daemons and a worker app with 2 processes: each done once."""

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.database import Database
from app.models import EmailOutbox, FailedJob, ProcessedJob
from app.services.job_queue import JobMessage
from app.services.sqs_queue import SQSJobQueue
from tests.support.moto_server import MotoServer
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import QueuePair, drain
from tests.support.wait import wait_for_progress
from tests.worker.processes import worker_env, worker_tier

# Its duration follows the machine's load (moto serves every receive and delete): the waits
# below fail on a stall, not on a clock, and the test may take longer than the default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

JOBS = 1000
RESENT = 100
# A correctness test: SQS calls get the time a loaded machine needs instead of failing at 5 s.
SQS_TIMEOUT_SECONDS = 60.0
# Redelivery of a message whose delete was lost: soon, not after EB's 300 s default.
VISIBILITY_TIMEOUT = "60"
# No delivery, delete or job for this long means something is stuck.
STALL_SECONDS = 90.0


async def test_a_thousand_concurrent_jobs_are_each_processed_exactly_once(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    settings = sqs_settings(
        tmp_path,
        database_url,
        moto,
        queues,
        sqs_timeout_seconds=SQS_TIMEOUT_SECONDS,
        sqs_max_attempts=5,
    )
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

    database = Database.create(settings)
    try:

        async def outbox_rows() -> int:
            async with database.sessionmaker() as session:
                return int(await session.scalar(select(func.count()).select_from(EmailOutbox)) or 0)

        env = worker_env(settings, moto, queues)
        with worker_tier(
            env,
            queues,
            tmp_path,
            workers=2,
            daemons=2,
            concurrency=20,
            sqsd_args=("--visibility-timeout", VISIBILITY_TIMEOUT),
        ) as tier:
            try:
                await wait_for_progress(
                    outbox_rows, target=JOBS, stall_after=STALL_SECONDS, what="the jobs"
                )

                # Let the resent duplicates drain too before stopping the tier.
                async def handled() -> int:
                    return (
                        JOBS + RESENT - await asyncio.to_thread(_visible_or_in_flight, moto, queues)
                    )

                await wait_for_progress(
                    handled, target=JOBS + RESENT, stall_after=STALL_SECONDS, what="the queue"
                )
            except AssertionError as exc:
                logs = "\n".join(process.log()[-3000:] for process in tier)
                raise AssertionError(f"{exc}\n{logs}") from None

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
