"""The product's email: what a message says, and the outbox record of every one handled."""

import logging

from pydantic import BaseModel, EmailStr, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import EmailOutbox
from app.services.mail import send_mail

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


async def deliver(settings: Settings, session: AsyncSession, job_id: str, email: Email) -> str:
    """Send (or, without SMTP_HOST, log) ``email`` and add its outbox row; returns the status.

    SMTP delivery is at least once: a crash after the server accepted the mail and before the
    commit sends it again on the retry.
    """
    if settings.smtp_host:
        await send_mail(settings, email.to, email.subject, email.body)
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
