"""The delivery semantics of the EB SQS daemon around the task handlers.

:func:`process` runs one delivery and says what sqsd should do with the message:

- ``DONE`` / ``DUPLICATE`` / ``REJECTED``: answered with 200, sqsd deletes the message.
  A job's effects and its ``processed_jobs`` row commit in one transaction, so a message
  delivered twice (or to two workers at once) does its work once. A message that can never
  succeed (malformed body, unknown task, invalid payload, missing or unreadable file) is
  recorded in ``failed_jobs`` with the reason and acknowledged: not retried forever, not lost.
- ``RETRY``: anything else (database, storage, AI or vector service trouble): not 200, so sqsd
  makes the message visible again after the error visibility timeout.
- ``TIMED_OUT``: the job ran past its budget (WORKER_JOB_TIMEOUT_SECONDS) and was cancelled;
  its transaction is rolled back (none of its writes there, no ``processed_jobs`` row) and it
  is retried like RETRY. Nothing else bounds a job: uvicorn workers take gunicorn's
  ``--timeout`` as a heartbeat only, and sqsd redelivers a job that outlives its
  InactivityTimeout while the first run goes on. The budget covers cron tasks and the local
  queue's jobs too (both come through here).

On the queue's last allowed receive a RETRY or TIMED_OUT is also recorded (``dead_lettered``,
with the task's give-up hook) before SQS moves the message to the dead-letter queue; that
recording runs after the job's budget, within GIVE_UP_SECONDS of its own.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError

from app.models.base import utcnow
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
from app.worker.cron_slots import slot_of
from app.worker.tasks import GIVE_UP_HOOKS, HANDLERS

logger = logging.getLogger(__name__)

JOB_TIMEOUTS = Counter(
    "hiringpro_worker_job_timeouts_total",
    "Jobs cut off at WORKER_JOB_TIMEOUT_SECONDS (rolled back and retried), by task.",
    ["task"],
)
# Recording a give-up gets this long after the job's budget ran out: WORKER_JOB_TIMEOUT_SECONDS
# plus this must stay below sqsd's InactivityTimeout, or sqsd gives up on the answer first.
GIVE_UP_SECONDS = 10.0
# A job slower than this is logged as slow (app.performance).
SLOW_JOB_MS = 10_000


@dataclass(frozen=True, slots=True)
class _Failed:
    """A transient failure of one run: retried, and recorded on the last allowed receive."""

    cause: str


def decode(delivery: Delivery, cron_file: Path, now: datetime) -> JobRun:
    """The job a delivery carries; PermanentJobError when it can never be run.

    A delivery to a cron task's route runs that task (its body is ignored) for the schedule slot
    sqsd names, or else the slot ``now`` falls in by ``cron_file`` (app.worker.cron_slots).
    """
    if delivery.route_task in CRON_TASKS:
        task = delivery.route_task
        scheduled_at = _parse_time(delivery.scheduled_at) or slot_of(task, now, cron_file)
        # One run per task and slot, however many times (or by how many daemons) it fires.
        marker = scheduled_at.isoformat()
        return JobRun(
            task=task,
            payload={},
            id=f"{task}@{marker}",
            key=f"cron:{task}:{marker}",
            message_id=delivery.message_id,
            scheduled_at=scheduled_at,
        )
    if delivery.cron_task_name is not None:
        raise PermanentJobError(f"{delivery.route_task} is not a scheduled task")
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


async def _give_up_if_last(ctx: WorkerContext, delivery: Delivery, job: JobRun, cause: str) -> None:
    """On the queue's last allowed receive, record the failure before the DLQ takes it."""
    if delivery.receive_count < ctx.settings.worker_max_receive_count:
        return
    reason = f"failed on receive {delivery.receive_count}: {cause}"
    try:
        async with asyncio.timeout(GIVE_UP_SECONDS):
            # One transaction: the failure record and what the task's owner sees change together.
            async with ctx.database.sessionmaker() as session:
                records.record_failure(
                    session, delivery, job.key, job.task, reason, dead_lettered=True
                )
                hook = GIVE_UP_HOOKS.get(job.task)
                if hook is not None:
                    await hook(ctx, job, session)
                await session.commit()
    except Exception:
        logger.exception("could not record the failure of job %s", job.key)


async def process(ctx: WorkerContext, delivery: Delivery) -> Outcome:
    """Run one delivery exactly once in effect, within the job time budget; see the module
    docstring for the outcomes.

    Cache tags that the job's services invalidate are sent as each transaction commits, and
    sent before this returns (so before sqsd hears the job is done).
    """
    async with invalidation_scope(ctx.cache, holding=False):
        try:
            job = decode(delivery, ctx.settings.worker_cron_file, utcnow())
        except PermanentJobError as exc:
            key = f"msg:{delivery.message_id}"
            return await _reject(ctx, delivery, key, delivery.route_task, str(exc))
        budget = ctx.settings.worker_job_timeout_seconds
        deadline = asyncio.timeout(budget)
        try:
            async with deadline:
                result = await _attempt(ctx, delivery, job)
        except TimeoutError:
            if not deadline.expired():
                raise  # not the budget: a timeout the job itself let escape
            return await _timed_out(ctx, delivery, job, budget)
        if isinstance(result, _Failed):
            await _give_up_if_last(ctx, delivery, job, result.cause)
            return Outcome.RETRY
        return result


async def _timed_out(ctx: WorkerContext, delivery: Delivery, job: JobRun, budget: float) -> Outcome:
    """The job was cancelled at its budget (its transaction rolled back): counted, logged once,
    retried, and recorded on the last allowed receive."""
    JOB_TIMEOUTS.labels(job.task).inc()
    logger.warning(
        "job %s (%s) ran out of its %g s budget on receive %d; rolled back for a retry",
        job.key,
        job.task,
        budget,
        delivery.receive_count,
        extra={
            "event": "job_timeout",
            "task": job.task,
            "job_key": job.key,
            "budget_seconds": budget,
            "receive_count": delivery.receive_count,
        },
    )
    await _give_up_if_last(ctx, delivery, job, f"timed out after {budget:g} s")
    return Outcome.TIMED_OUT


async def _attempt(ctx: WorkerContext, delivery: Delivery, job: JobRun) -> Outcome | _Failed:
    if await records.is_processed(ctx.database, job.key):
        return Outcome.DUPLICATE
    async with PerformanceLogger(f"job {job.task}", slow_ms=SLOW_JOB_MS, job_key=job.key):
        return await _run(ctx, delivery, job)


async def _run(ctx: WorkerContext, delivery: Delivery, job: JobRun) -> Outcome | _Failed:
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
        return _Failed(type(exc).__name__)
    except Exception as exc:
        logger.exception(
            "job %s (%s) failed on receive %d", job.key, job.task, delivery.receive_count
        )
        return _Failed(type(exc).__name__)
    if reason is not None:
        logger.warning("job %s (%s) failed for good: %s", job.key, job.task, reason)
        return Outcome.REJECTED
    return Outcome.DONE
