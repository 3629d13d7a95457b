"""The worker's bookkeeping: which jobs are done (idempotency) and which failed for good."""

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.database import Database
from app.models import FailedJob, ProcessedJob
from app.services.job_queue import Delivery

MAX_STORED_BODY_CHARS = 10_000


def _message_id(delivery: Delivery) -> str:
    # Empty for a cron delivery that came without one (its key names the task and slot).
    return (delivery.message_id or "")[:255]


async def is_processed(database: Database, key: str) -> bool:
    """Whether a job with this key already committed its effects (or was rejected)."""
    async with database.read_engine.connect() as connection:
        found = await connection.scalar(select(ProcessedJob.id).where(ProcessedJob.key == key))
    return found is not None


def mark_processed(
    session: AsyncSession, delivery: Delivery, key: str, task: str, *, rejected: bool
) -> None:
    """Add the job's idempotency record to the transaction holding its effects."""
    session.add(
        ProcessedJob(
            key=key,
            task=task[:50],
            message_id=_message_id(delivery),
            status="rejected" if rejected else "done",
        )
    )


def record_failure(
    session: AsyncSession,
    delivery: Delivery,
    key: str,
    task: str,
    reason: str,
    *,
    dead_lettered: bool = False,
) -> None:
    """Add a failed-job row, with the body as received so the job can be inspected or replayed."""
    session.add(
        FailedJob(
            key=key[:255],
            task=task[:50],
            message_id=_message_id(delivery),
            reason=reason[:500],
            body=delivery.body.decode("utf-8", "replace")[:MAX_STORED_BODY_CHARS],
            receive_count=delivery.receive_count,
            dead_lettered=dead_lettered,
        )
    )


async def prune_processed(session: AsyncSession, processed_before: datetime) -> int:
    """Idempotency records older than `processed_before` are deleted; the count."""
    pruned = await session.execute(
        delete(ProcessedJob).where(ProcessedJob.processed_at < processed_before)
    )
    return int(pruned.rowcount)  # type: ignore[attr-defined]
