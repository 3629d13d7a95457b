"""resume-parse: read the uploaded file, extract skills and experience, summarise it, update the
profile, notify the candidate and queue the vector indexing. A newer upload supersedes the job.

Parsing runs in a limited child process (app.domain.resume_sandbox), in the worker tier and in the
web process alike (QUEUE_BACKEND=local). A file the parser cannot read or that hits a limit is a
permanent failure: the profile says `failed` with the reason, the job is recorded as rejected and
not retried. A parser process that could not run is retried like any infrastructure error.
"""

import logging

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import profiles, resumes
from app.domain.resume_parser import ResumeParseError
from app.domain.resume_sandbox import SandboxLimits, parse_in_sandbox
from app.services.storage import StorageNotFound
from app.worker.context import JobRun, PermanentJobError, WorkerContext, derived_job_id

logger = logging.getLogger(__name__)

MAX_INDEXED_TEXT_CHARS = 4_000


class ResumeParsePayload(BaseModel):
    user_id: int
    storage_key: str = Field(min_length=1, max_length=512)


async def run(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> str | None:
    """Parse the resume; a reason when the file can never be read (the profile says failed)."""
    payload = job.parsed(ResumeParsePayload)
    user_id, key = payload.user_id, payload.storage_key
    async with ctx.database.sessionmaker() as status_session:
        # Committed at once so resume-status shows the work in progress.
        marked = await resumes.mark_processing(status_session, user_id, key)
        await status_session.commit()
    if not marked:
        if not await profiles.profile_exists(session, user_id):
            raise PermanentJobError("the candidate profile no longer exists")
        logger.info("resume job %s superseded by a newer upload", job.id)
        return None

    try:
        data = await ctx.storage.get(key)
        parsed = await parse_in_sandbox(data, key.rsplit(".", 1)[-1].lower(), _limits(ctx))
    except StorageNotFound:
        return await _failed(session, payload, "The resume file is missing.")
    except ResumeParseError as exc:
        return await _failed(session, payload, str(exc))
    summary = await ctx.ai.summarize_resume(parsed.text)
    stored = await resumes.record_parsed(
        session,
        user_id,
        key,
        summary=summary,
        skills=parsed.skills,
        experience_years=parsed.experience_years,
    )
    if not stored:
        return None
    # Queued before the commit: if the commit fails, the retry queues it again under the same
    # derived id (indexing is an idempotent upsert), so the index is never silently skipped.
    text = " ".join(part for part in (summary, " ".join(parsed.skills)) if part)
    await ctx.jobs.enqueue(
        "vector-index",
        {
            "candidate_id": user_id,
            "text": text[:MAX_INDEXED_TEXT_CHARS],
            "metadata": {"skills": parsed.skills, "experience_years": parsed.experience_years or 0},
        },
        job_id=derived_job_id(job.id, "vector-index"),
    )
    return None


def _limits(ctx: WorkerContext) -> SandboxLimits:
    settings = ctx.settings
    return SandboxLimits(
        cpu_seconds=settings.resume_parse_cpu_seconds,
        memory_mb=settings.resume_parse_memory_mb,
        timeout_seconds=settings.resume_parse_timeout_seconds,
        concurrency=settings.resume_parse_concurrency,
    )


async def _failed(session: AsyncSession, payload: ResumeParsePayload, reason: str) -> str:
    await resumes.record_failure(session, payload.user_id, payload.storage_key, reason)
    return reason


async def gave_up(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> None:
    """Last receive failed: the message goes to the dead-letter queue; the profile says so."""
    payload = job.parsed(ResumeParsePayload)
    await resumes.give_up(session, payload.user_id, payload.storage_key)
