"""One handler per task, by task name.

A handler does its work in the session (flushing, never committing) and returns None, or a reason
when the job failed for good but its effects (e.g. a "failed" status) must be kept.
"""

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from app.services.job_queue import CRON_TASKS, QUEUED_TASKS
from app.worker.context import JobRun, WorkerContext
from app.worker.tasks import cleanup_sessions, email, generate_reports, resume_parse, vector_index

Handler = Callable[[WorkerContext, JobRun, AsyncSession], Awaitable[str | None]]
GiveUpHook = Callable[[WorkerContext, JobRun, AsyncSession], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    "resume-parse": resume_parse.run,
    "vector-index": vector_index.run,
    "email": email.run,
    "cleanup-sessions": cleanup_sessions.run,
    "generate-reports": generate_reports.run,
}
# Run when a job's last allowed receive fails, before SQS moves it to the dead-letter queue,
# in the transaction that records the failure.
GIVE_UP_HOOKS: dict[str, GiveUpHook] = {"resume-parse": resume_parse.gave_up}

assert set(HANDLERS) == set(QUEUED_TASKS) | set(CRON_TASKS)
