"""The worker's job handlers and the delivery semantics of the EB SQS daemon around them.

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

The same function serves the worker app's routes and the in-process local queue.
"""

import asyncio
import logging
import smtplib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from app.config import Settings
from app.database import Database
from app.models import (
    Attempt,
    CandidateProfile,
    DailyReport,
    FailedJob,
    Job,
    Notification,
    ProcessedJob,
    User,
)
from app.models.base import utcnow
from app.services import email as email_service
from app.services.ai import AIService
from app.services.cache import Cache, invalidate_candidates
from app.services.job_queue import (
    CRON_TASKS,
    QUEUED_TASKS,
    Delivery,
    JobQueue,
    LocalJobQueue,
    Outcome,
    SQSJobQueue,
)
from app.services.resume_parser import ResumeParseError, parse_resume
from app.services.sqs_queue import JobMessage, MalformedMessage
from app.services.storage import Storage, StorageNotFound
from app.services.vector_search import VectorIndex

logger = logging.getLogger(__name__)

MAX_STORED_BODY_CHARS = 10_000
MAX_INDEXED_TEXT_CHARS = 4_000
_DERIVED_JOB_NAMESPACE = uuid.UUID("8f0f3c1e-7f3a-4d0e-9c44-2f7c1b0f6a11")

P = TypeVar("P", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """The resources handlers use (the app's, created in its lifespan)."""

    settings: Settings
    database: Database
    cache: Cache
    storage: Storage
    ai: AIService
    vector_index: VectorIndex
    jobs: JobQueue

    @classmethod
    def from_state(cls, state: State) -> "WorkerContext":
        """The context of an app whose lifespan put these resources on ``app.state``."""
        return cls(
            settings=state.settings,
            database=state.database,
            cache=state.cache,
            storage=state.storage,
            ai=state.ai,
            vector_index=state.vector_index,
            jobs=state.jobs,
        )


@dataclass(frozen=True, slots=True)
class JobRun:
    """A decoded job about to run."""

    task: str
    payload: dict[str, Any]
    id: str
    key: str
    message_id: str
    scheduled_at: datetime | None = None


class PermanentJobError(Exception):
    """The job can never succeed; nothing it did is kept, the reason is recorded."""


# A handler does its work in the session (flushing, never committing) and returns None, or a
# reason when the job failed for good but its effects (e.g. a "failed" status) must be kept.
Handler = Callable[[WorkerContext, JobRun, AsyncSession], Awaitable[str | None]]


# --- Payloads -------------------------------------------------------------------------------


class ResumeParsePayload(BaseModel):
    user_id: int
    storage_key: str = Field(min_length=1, max_length=512)


class VectorIndexPayload(BaseModel):
    candidate_id: int
    text: str = Field(max_length=MAX_INDEXED_TEXT_CHARS * 2)
    metadata: dict[str, str | int | float | list[str]] = Field(default_factory=dict)


def _payload(model: type[P], job: JobRun) -> P:
    try:
        return model.model_validate(job.payload)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(part) for part in error["loc"]) for error in exc.errors())
        raise PermanentJobError(f"invalid {job.task} payload ({fields})") from None


# --- Handlers -------------------------------------------------------------------------------


async def parse_resume_job(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> str | None:
    """Extract the resume's text, skills and experience, summarize it, update the profile,
    notify the candidate and queue the vector indexing. A newer upload supersedes the job."""
    payload = _payload(ResumeParsePayload, job)
    key = payload.storage_key
    async with ctx.database.sessionmaker() as status_session:
        # Committed at once so resume-status shows the work in progress.
        marked = await status_session.execute(
            update(CandidateProfile)
            .where(CandidateProfile.user_id == payload.user_id, CandidateProfile.resume_key == key)
            .values(resume_status="processing", updated_at=utcnow())
        )
        await status_session.commit()
    if marked.rowcount == 0:  # type: ignore[attr-defined]
        exists = await session.scalar(
            select(CandidateProfile.user_id).where(CandidateProfile.user_id == payload.user_id)
        )
        if exists is None:
            raise PermanentJobError("the candidate profile no longer exists")
        logger.info("resume job %s superseded by a newer upload", job.id)
        return None
    await invalidate_candidates(ctx.cache)

    try:
        data = await ctx.storage.get(key)
        parsed = await asyncio.to_thread(parse_resume, data, key.rsplit(".", 1)[-1].lower())
    except StorageNotFound:
        return await _resume_failed(session, payload, "The resume file is missing.")
    except ResumeParseError as exc:
        return await _resume_failed(session, payload, f"The resume could not be read: {exc}.")
    summary = await ctx.ai.summarize_resume(parsed.text)

    profile = await _locked_profile(session, payload)
    if profile is None:
        return None
    now = utcnow()
    profile.summary = summary or profile.summary
    profile.skills = parsed.skills
    profile.experience_years = parsed.experience_years
    profile.resume_status = "parsed"
    profile.resume_error = None
    profile.resume_parsed_at = now
    profile.updated_at = now
    found = f"{len(parsed.skills)} skill{'s' if len(parsed.skills) != 1 else ''}"
    session.add(
        Notification(
            user_id=payload.user_id,
            kind="resume_parsed",
            title="Your resume has been processed",
            body=f"We read your resume and found {found}. Check your profile.",
        )
    )
    await session.flush()
    # Queued before the commit: if the commit fails, the retry queues it again under the same
    # derived id (indexing is an idempotent upsert), so the index is never silently skipped.
    text = " ".join(part for part in (summary, " ".join(parsed.skills)) if part)
    await ctx.jobs.enqueue(
        "vector-index",
        {
            "candidate_id": payload.user_id,
            "text": text[:MAX_INDEXED_TEXT_CHARS],
            "metadata": {"skills": parsed.skills, "experience_years": parsed.experience_years or 0},
        },
        job_id=derived_job_id(job.id, "vector-index"),
    )
    return None


async def _locked_profile(
    session: AsyncSession, payload: ResumeParsePayload
) -> CandidateProfile | None:
    """The profile, locked, if it still points at this job's file."""
    profile = await session.get(
        CandidateProfile, payload.user_id, with_for_update=True, populate_existing=True
    )
    if profile is None or profile.resume_key != payload.storage_key:
        return None
    return profile


async def _resume_failed(session: AsyncSession, payload: ResumeParsePayload, reason: str) -> str:
    profile = await _locked_profile(session, payload)
    if profile is not None:
        profile.resume_status = "failed"
        profile.resume_error = reason[:500]
        profile.updated_at = utcnow()
        session.add(
            Notification(
                user_id=payload.user_id,
                kind="resume_failed",
                title="We could not process your resume",
                body=f"{reason} Please upload a PDF, DOCX or plain-text file with selectable text.",
            )
        )
        await session.flush()
    return reason


async def _resume_gave_up(ctx: WorkerContext, job: JobRun) -> None:
    """Last receive failed: the message goes to the dead-letter queue; the profile says so."""
    payload = _payload(ResumeParsePayload, job)
    async with ctx.database.sessionmaker() as session:
        await session.execute(
            update(CandidateProfile)
            .where(
                CandidateProfile.user_id == payload.user_id,
                CandidateProfile.resume_key == payload.storage_key,
                CandidateProfile.resume_status.in_(("queued", "processing")),
            )
            .values(
                resume_status="failed",
                resume_error="Processing failed repeatedly; it will be retried later.",
                updated_at=utcnow(),
            )
        )
        await session.commit()
    await invalidate_candidates(ctx.cache)


async def index_vector_job(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> str | None:
    """Upsert the candidate's vector (idempotent by candidate id)."""
    payload = _payload(VectorIndexPayload, job)
    await ctx.vector_index.upsert_candidate(payload.candidate_id, payload.text, payload.metadata)
    return None


async def email_job(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> str | None:
    """Send the email (or log it to the outbox without SMTP)."""
    message = _payload(email_service.Email, job)
    try:
        await email_service.deliver(ctx.settings, session, job.id, message)
    except smtplib.SMTPRecipientsRefused:
        raise PermanentJobError("the mail server refused the recipient") from None
    return None


async def cleanup_sessions_job(
    ctx: WorkerContext, job: JobRun, session: AsyncSession
) -> str | None:
    """Expired in-progress attempts become abandoned (after a grace to complete them);
    abandoned attempts past the retention are deleted, with old idempotency records."""
    settings = ctx.settings
    now = utcnow()
    abandoned = await session.execute(
        update(Attempt)
        .where(
            Attempt.status == "in_progress",
            Attempt.expires_at < now - timedelta(minutes=settings.attempt_abandon_grace_minutes),
        )
        .values(status="abandoned")
    )
    removed = await session.execute(
        delete(Attempt).where(
            Attempt.status == "abandoned",
            Attempt.expires_at < now - timedelta(hours=settings.abandoned_attempt_retention_hours),
        )
    )
    pruned = await session.execute(
        delete(ProcessedJob).where(
            ProcessedJob.processed_at < now - timedelta(days=settings.processed_job_retention_days)
        )
    )
    logger.info(
        "cleanup-sessions: %d attempts abandoned, %d removed, %d processed-job records pruned",
        abandoned.rowcount,  # type: ignore[attr-defined]
        removed.rowcount,  # type: ignore[attr-defined]
        pruned.rowcount,  # type: ignore[attr-defined]
    )
    return None


async def generate_reports_job(
    ctx: WorkerContext, job: JobRun, session: AsyncSession
) -> str | None:
    """Aggregates for the UTC day before the schedule (written again if it exists)."""
    reference = job.scheduled_at or utcnow()
    day = reference.astimezone(UTC).date() - timedelta(days=1)
    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1)

    def within(column: Any) -> Any:
        return and_(column >= start, column < end)

    def count(*conditions: Any) -> Any:
        return func.count().filter(*conditions)

    candidates = select(count(within(User.created_at), User.role == "candidate")).select_from(User)
    uploaded = select(count(within(CandidateProfile.resume_uploaded_at))).select_from(
        CandidateProfile
    )
    parsed = select(count(within(CandidateProfile.resume_parsed_at))).select_from(CandidateProfile)
    attempts = select(
        count(within(Attempt.started_at)),
        count(within(Attempt.completed_at), Attempt.status == "completed"),
        func.avg(Attempt.score * 100.0 / Attempt.max_score).filter(
            within(Attempt.completed_at), Attempt.status == "completed", Attempt.max_score > 0
        ),
    ).select_from(Attempt)
    jobs_posted = select(count(within(Job.created_at))).select_from(Job)

    started, completed, average = (await session.execute(attempts)).one()
    values = {
        "new_candidates": await session.scalar(candidates) or 0,
        "resumes_uploaded": await session.scalar(uploaded) or 0,
        "resumes_parsed": await session.scalar(parsed) or 0,
        "attempts_started": started or 0,
        "attempts_completed": completed or 0,
        "average_score_percent": round(float(average), 2) if average is not None else None,
        "jobs_posted": await session.scalar(jobs_posted) or 0,
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
    return None


HANDLERS: dict[str, Handler] = {
    "resume-parse": parse_resume_job,
    "vector-index": index_vector_job,
    "email": email_job,
    "cleanup-sessions": cleanup_sessions_job,
    "generate-reports": generate_reports_job,
}
GIVE_UP_HOOKS: dict[str, Callable[[WorkerContext, JobRun], Awaitable[None]]] = {
    "resume-parse": _resume_gave_up,
}
# Tasks whose committed effects change candidate profiles (cached in the web tier's listings).
CHANGES_CANDIDATES = frozenset({"resume-parse"})
assert set(HANDLERS) == set(QUEUED_TASKS) | set(CRON_TASKS)


def derived_job_id(parent_id: str, task: str) -> str:
    """A stable id for a job queued by another job, so its redeliveries queue the same job."""
    return uuid.uuid5(_DERIVED_JOB_NAMESPACE, f"{parent_id}:{task}").hex


# --- Delivery semantics ---------------------------------------------------------------------


def _job_for(delivery: Delivery) -> JobRun:
    """Decode a delivery; PermanentJobError when it can never be run."""
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
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


async def _is_processed(ctx: WorkerContext, key: str) -> bool:
    async with ctx.database.read_engine.connect() as connection:
        found = await connection.scalar(select(ProcessedJob.id).where(ProcessedJob.key == key))
    return found is not None


def _failure(
    delivery: Delivery, key: str, task: str, reason: str, *, dead_lettered: bool = False
) -> FailedJob:
    return FailedJob(
        key=key[:255],
        task=task[:50],
        message_id=delivery.message_id[:255],
        reason=reason[:500],
        body=delivery.body.decode("utf-8", "replace")[:MAX_STORED_BODY_CHARS],
        receive_count=delivery.receive_count,
        dead_lettered=dead_lettered,
    )


async def _reject(
    ctx: WorkerContext, delivery: Delivery, key: str, task: str, reason: str
) -> Outcome:
    """Record a permanent failure once and acknowledge the message."""
    logger.warning("job %s (%s) rejected: %s", key, task, reason)
    try:
        async with ctx.database.sessionmaker() as session:
            session.add(_failure(delivery, key, task, reason))
            session.add(
                ProcessedJob(
                    key=key, task=task[:50], message_id=delivery.message_id[:255], status="rejected"
                )
            )
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
        async with ctx.database.sessionmaker() as session:
            session.add(_failure(delivery, job.key, job.task, reason, dead_lettered=True))
            await session.commit()
        hook = GIVE_UP_HOOKS.get(job.task)
        if hook is not None:
            await hook(ctx, job)
    except Exception:
        logger.exception("could not record the failure of job %s", job.key)
    return Outcome.RETRY


async def process(ctx: WorkerContext, delivery: Delivery) -> Outcome:
    """Run one delivery exactly once in effect; see the module docstring for the outcomes."""
    try:
        job = _job_for(delivery)
    except PermanentJobError as exc:
        key = f"msg:{delivery.message_id}"
        return await _reject(ctx, delivery, key, delivery.route_task, str(exc))
    if await _is_processed(ctx, job.key):
        return Outcome.DUPLICATE
    handler = HANDLERS[job.task]
    try:
        async with ctx.database.sessionmaker() as session:
            reason = await handler(ctx, job, session)
            if reason is not None:
                session.add(_failure(delivery, job.key, job.task, reason))
            session.add(
                ProcessedJob(
                    key=job.key,
                    task=job.task,
                    message_id=delivery.message_id[:255],
                    status="done" if reason is None else "rejected",
                )
            )
            await session.commit()
    except PermanentJobError as exc:
        return await _reject(ctx, delivery, job.key, job.task, str(exc))
    except IntegrityError as exc:
        # A concurrent delivery of the same job committed first (the unique key waited for it).
        if await _is_processed(ctx, job.key):
            return Outcome.DUPLICATE
        logger.exception("job %s (%s) failed", job.key, job.task)
        return await _retry(ctx, delivery, job, exc)
    except Exception as exc:
        logger.exception(
            "job %s (%s) failed on receive %d", job.key, job.task, delivery.receive_count
        )
        return await _retry(ctx, delivery, job, exc)
    if job.task in CHANGES_CANDIDATES:
        await invalidate_candidates(ctx.cache)
    if reason is not None:
        logger.warning("job %s (%s) failed for good: %s", job.key, job.task, reason)
        return Outcome.REJECTED
    return Outcome.DONE


async def open_job_queue(settings: Settings, state: State) -> JobQueue:
    """The configured queue. The local one runs this module's handlers in this process with the
    resources the app's lifespan put on ``state`` (read when each job runs)."""
    if settings.queue_backend == "sqs":
        queue = SQSJobQueue(settings)
        await queue.start()
        return queue

    async def run(delivery: Delivery) -> Outcome:
        return await process(WorkerContext.from_state(state), delivery)

    return LocalJobQueue(settings, run)
