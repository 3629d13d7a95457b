"""cleanup-sessions (cron): expired in-progress attempts become abandoned after a grace to
complete them; abandoned attempts past the retention are deleted, with old idempotency records."""

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import attempts
from app.models.base import utcnow
from app.worker import records
from app.worker.context import JobRun, WorkerContext

logger = logging.getLogger(__name__)


async def run(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> str | None:
    """Abandon, delete and prune in one transaction."""
    settings = ctx.settings
    now = utcnow()
    abandoned = await attempts.abandon_expired(
        session, now - timedelta(minutes=settings.attempt_abandon_grace_minutes)
    )
    removed = await attempts.delete_abandoned(
        session, now - timedelta(hours=settings.abandoned_attempt_retention_hours)
    )
    pruned = await records.prune_processed(
        session, now - timedelta(days=settings.processed_job_retention_days)
    )
    logger.info(
        "cleanup-sessions: %d attempts abandoned, %d removed, %d processed-job records pruned",
        abandoned,
        removed,
        pruned,
    )
    return None
