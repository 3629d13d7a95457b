"""Outgoing email: SMTP when SMTP_HOST is set, otherwise a logged outbox row (development)."""

import asyncio
import logging
import smtplib
from email.message import EmailMessage

from pydantic import BaseModel, EmailStr, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import EmailOutbox
from app.services.job_queue import JobQueue
from app.services.sqs_queue import QueueUnavailable

logger = logging.getLogger(__name__)


class Email(BaseModel):
    """An email job's payload."""

    to: EmailStr
    subject: str = Field(min_length=1, max_length=300)
    body: str = Field(min_length=1, max_length=100_000)
    kind: str = Field("generic", max_length=50)


def password_reset_email(settings: Settings, to: str, token: str) -> Email:
    """The reset email for ``to`` with its single-use link."""
    link = f"{settings.password_reset_url}?token={token}"
    body = (
        "Someone asked to reset the password of your Hiring Pro account.\n\n"
        f"Open this link within 30 minutes to choose a new password:\n{link}\n\n"
        "If it was not you, ignore this email: your password stays as it is."
    )
    return Email(to=to, subject="Reset your Hiring Pro password", body=body, kind="password_reset")


def _send_smtp(settings: Settings, email: Email) -> None:
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = email.to
    message["Subject"] = email.subject
    message.set_content(email.body)
    assert settings.smtp_host is not None
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
    ) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password is not None:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(message)


async def deliver(settings: Settings, session: AsyncSession, job_id: str, email: Email) -> str:
    """Send (or log) ``email`` and add its outbox row to the session; returns the status.

    SMTP delivery is at least once: a crash after the server accepted the mail and before the
    commit sends it again on the retry.
    """
    if settings.smtp_host:
        # smtplib blocks; a thread keeps the event loop serving other deliveries.
        await asyncio.to_thread(_send_smtp, settings, email)
        status, stored_body = "sent", None
    else:
        status, stored_body = "logged", email.body
        logger.info("email %s (%s) logged to the outbox", job_id, email.kind)
    session.add(
        EmailOutbox(
            job_id=job_id,
            kind=email.kind,
            recipient=email.to,
            subject=email.subject,
            body=stored_body,
            status=status,
        )
    )
    await session.flush()
    return status


async def queue_password_reset(jobs: JobQueue, settings: Settings, to: str, token: str) -> None:
    """Queue the reset email; a queue failure is logged, never shown (the answer must not say
    whether the account exists)."""
    email = password_reset_email(settings, to, token)
    try:
        await jobs.enqueue("email", email.model_dump())
    except QueueUnavailable:
        logger.exception("could not queue the password reset email")
