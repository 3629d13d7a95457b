"""The delivery semantics of the EB SQS daemon around the task handlers.

:func:`process` runs one delivery and says what sqsd should do with the message:

- ``DONE`` / ``DUPLICATE`` / ``REJECTED``: answered with 200, sqsd deletes the message.
  A job's effects and its ``processed_jobs`` row commit in one transaction, so a message
  delivered twice (or to two workers at once) does its work once. A message that can never
  succeed (malformed body, unknown task, invalid payload, missing or unreadable file) is
  recorded in ``failed_jobs`` with the reason and acknowledged: not retried forever, not lost.
- ``RETRY``: anything else (database, storage, AI or vector service trouble): not 200, so sqsd
  makes the message visible again after the error visibility timeout. On the queue's last
  allowed receive the failure is also recorded (``dead_lettered``) before SQS moves the message
  to the dead-letter queue.
"""

import logging
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from app.observability.logging import PerformanceLogger
from app.services.cache import invalidation_scope
from app.services.job_queue import (
    CRON_TASKS,
    QUEUED_TASKS,
    Delivery,
    JobMessage,
    MalformedMessage,
    Outcome,
)
from app.worker import records
from app.worker.context import JobRun, PermanentJobError, WorkerContext
from app.worker.tasks import GIVE_UP_HOOKS, HANDLERS

logger = logging.getLogger(__name__)


def decode(delivery: Delivery) -> JobRun:
    """The job a delivery carries; PermanentJobError when it can never be run."""
    if delivery.cron_task_name is not None:
        if delivery.route_task not in CRON_TASKS:
            raise PermanentJobError(f"{delivery.route_task} is not a scheduled task")
        scheduled_at = _parse_time(delivery.scheduled_at)
        # One run per task and schedule, however many times (or by how many leaders) it fires.
        marker = scheduled_at.isoformat() if scheduled_at else f"msg-{delivery.message_id}"
        return JobRun(
            task=delivery.route_task,
            payload={},
            id=f"{delivery.route_task}@{marker}",
            key=f"cron:{delivery.route_task}:{marker}",
            message_id=delivery.message_id,
            scheduled_at=scheduled_at,
        )
    try:
        message = JobMessage.decode(delivery.body)
    except MalformedMessage as exc:
        raise PermanentJobError(str(exc)) from None
    if message.task not in QUEUED_TASKS:
        raise PermanentJobError(f"unknown task {message.task[:50]!r}")
    return JobRun(
        task=message.task,
        payload=message.payload,
        id=message.id,
        key=f"job:{message.id}",
        message_id=delivery.message_id,
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
        return None


async def _reject(
    ctx: WorkerContext, delivery: Delivery, key: str, task: str, reason: str
) -> Outcome:
    """Record a permanent failure once and acknowledge the message."""
    logger.warning("job %s (%s) rejected: %s", key, task, reason)
    try:
        async with ctx.database.sessionmaker() as session:
            records.record_failure(session, delivery, key, task, reason)
            records.mark_processed(session, delivery, key, task, rejected=True)
            await session.commit()
    except IntegrityError:
        return Outcome.DUPLICATE  # another delivery recorded it first
    return Outcome.REJECTED


async def _retry(ctx: WorkerContext, delivery: Delivery, job: JobRun, exc: Exception) -> Outcome:
    """A transient failure; on the last allowed receive, record it before the DLQ takes it."""
    if delivery.receive_count < ctx.settings.worker_max_receive_count:
        return Outcome.RETRY
    reason = f"failed on receive {delivery.receive_count}: {type(exc).__name__}"
    try:
        # One transaction: the failure record and what the task's owner sees change together.
        async with ctx.database.sessionmaker() as session:
            records.record_failure(session, delivery, job.key, job.task, reason, dead_lettered=True)
            hook = GIVE_UP_HOOKS.get(job.task)
            if hook is not None:
                await hook(ctx, job, session)
            await session.commit()
    except Exception:
        logger.exception("could not record the failure of job %s", job.key)
    return Outcome.RETRY


async def process(ctx: WorkerContext, delivery: Delivery) -> Outcome:
    """Run one delivery exactly once in effect; see the module docstring for the outcomes.

    Cache tags that the job's services invalidate are sent as each transaction commits, and
    sent before this returns (so before sqsd hears the job is done).
    """
    async with invalidation_scope(ctx.cache, holding=False):
        try:
            job = decode(delivery)
        except PermanentJobError as exc:
            key = f"msg:{delivery.message_id}"
            return await _reject(ctx, delivery, key, delivery.route_task, str(exc))
        if await records.is_processed(ctx.database, job.key):
            return Outcome.DUPLICATE
        async with PerformanceLogger(f"job {job.task}", slow_ms=10_000, job_key=job.key):
            return await _run(ctx, delivery, job)


async def _run(ctx: WorkerContext, delivery: Delivery, job: JobRun) -> Outcome:
    handler = HANDLERS[job.task]
    try:
        async with ctx.database.sessionmaker() as session:
            reason = await handler(ctx, job, session)
            if reason is not None:
                records.record_failure(session, delivery, job.key, job.task, reason)
            records.mark_processed(
                session, delivery, job.key, job.task, rejected=reason is not None
            )
            await session.commit()
    except PermanentJobError as exc:
        return await _reject(ctx, delivery, job.key, job.task, str(exc))
    except IntegrityError as exc:
        # A concurrent delivery of the same job committed first (the unique key waited for it).
        if await records.is_processed(ctx.database, job.key):
            return Outcome.DUPLICATE
        logger.exception("job %s (%s) failed", job.key, job.task)
        return await _retry(ctx, delivery, job, exc)
    except Exception as exc:
        logger.exception(
            "job %s (%s) failed on receive %d", job.key, job.task, delivery.receive_count
        )
        return await _retry(ctx, delivery, job, exc)
    if reason is not None:
        logger.warning("job %s (%s) failed for good: %s", job.key, job.task, reason)
        return Outcome.REJECTED
    return Outcome.DONE
