"""Aggregates for admins: the live dashboard and the daily report of the cron task."""

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.domain import assessments, attempts, auth, jobs, resumes
from app.domain.profiles import candidate_counts
from app.models import DailyReport
from app.models.base import utcnow

logger = logging.getLogger(__name__)


async def dashboard(connection: AsyncConnection) -> dict[str, Any]:
    """Headline counts, one query per table."""
    candidates, resumes_parsed = await candidate_counts(connection)
    return {
        "candidates": candidates,
        "active_jobs": await jobs.count_active(connection),
        "active_tests": await assessments.count_active(connection),
        **await attempts.attempt_counts(connection),
        "resumes_parsed": resumes_parsed,
    }


def report_day(scheduled_at: datetime) -> date:
    """The UTC day a report scheduled at `scheduled_at` covers: the day before."""
    return scheduled_at.astimezone(UTC).date() - timedelta(days=1)


async def write_daily_report(session: AsyncSession, day: date) -> None:
    """Aggregates for the UTC `day` (written again if the report exists)."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1)
    uploaded, parsed = await resumes.activity_between(session, start, end)
    values = {
        "new_candidates": await auth.candidates_registered(session, start, end),
        "resumes_uploaded": uploaded,
        "resumes_parsed": parsed,
        **await attempts.activity_between(session, start, end),
        "jobs_posted": await jobs.posted_between(session, start, end),
        "generated_at": utcnow(),
    }
    report = await session.get(DailyReport, day, with_for_update=True)
    if report is None:
        session.add(DailyReport(report_date=day, **values))
    else:
        for name, value in values.items():
            setattr(report, name, value)
    await session.flush()
    logger.info("generate-reports: report for %s written", day.isoformat())
