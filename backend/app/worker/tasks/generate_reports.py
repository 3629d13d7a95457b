"""generate-reports (cron): the previous UTC day's aggregates."""

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import reports
from app.models.base import utcnow
from app.worker.context import JobRun, WorkerContext


async def run(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> str | None:
    """Write the report for the day before the schedule (written again if it exists)."""
    await reports.write_daily_report(session, reports.report_day(job.scheduled_at or utcnow()))
    return None
