"""Outgoing mail over SMTP (SMTP_HOST, with STARTTLS and login when configured)."""

import asyncio
import smtplib
from email.message import EmailMessage

from app.config import Settings


def _send(settings: Settings, to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    assert settings.smtp_host is not None
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
    ) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username and settings.smtp_password is not None:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(message)


async def send_mail(settings: Settings, to: str, subject: str, body: str) -> None:
    """Send one message. smtplib blocks, so it runs in a thread; its errors propagate
    (`smtplib.SMTPRecipientsRefused` when the server refuses the recipient)."""
    await asyncio.to_thread(_send, settings, to, subject, body)
