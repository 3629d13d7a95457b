"""email: send the message over SMTP, or log it to the outbox without SMTP."""

import smtplib

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.emails import Email, deliver
from app.worker.context import JobRun, PermanentJobError, WorkerContext


async def run(ctx: WorkerContext, job: JobRun, session: AsyncSession) -> str | None:
    """Deliver the email (a refused recipient is permanent; other SMTP errors are retried)."""
    message = job.parsed(Email)
    try:
        await deliver(ctx.settings, session, job.id, message)
    except smtplib.SMTPRecipientsRefused:
        raise PermanentJobError("the mail server refused the recipient") from None
    return None
