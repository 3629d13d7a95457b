"""Accounts: registration, login and password resets."""

import asyncio
import logging
from datetime import datetime

from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.database import Database
from app.domain import profiles
from app.domain.emails import password_reset_email
from app.errors import BadRequest, Conflict, Forbidden, NotAuthenticated
from app.models import User
from app.security import (
    InvalidToken,
    create_password_reset_token,
    decode_password_reset_token,
    password_fingerprint,
    verify_password,
)
from app.services.job_queue import JobQueue

logger = logging.getLogger(__name__)


class PasswordService:
    """Hashing runs in a worker thread: argon2 is deliberately slow and must not block the loop."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher
        # Verified against when the email is unknown, so both paths cost the same time.
        self._dummy_hash = hasher.hash("timing-equaliser")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        target = password_hash or self._dummy_hash
        ok = await asyncio.to_thread(verify_password, self._hasher, target, password)
        return ok and password_hash is not None


def normalise_email(email: str) -> str:
    """Emails are unique case-insensitively; stored lower-cased."""
    return email.strip().lower()


async def register_candidate(
    session: AsyncSession, passwords: PasswordService, email: str, password: str, full_name: str
) -> User:
    """Create a candidate and an empty profile; Conflict if the email is taken."""
    email = normalise_email(email)
    password_hash = await passwords.hash(password)
    user = User(email=email, password_hash=password_hash, full_name=full_name, role="candidate")
    try:
        # A savepoint keeps the session usable when the unique constraint rejects a racing twin.
        async with session.begin_nested():
            session.add(user)
            await session.flush()
            await profiles.create_profile(session, user.id)
    except IntegrityError:
        raise Conflict("An account with this email already exists.", code="email_taken") from None
    return user


async def authenticate(
    session: AsyncSession,
    passwords: PasswordService,
    email: str,
    password: str,
    *,
    admin_only: bool = False,
) -> User:
    """The user for these credentials, or NotAuthenticated (same answer for unknown email)."""
    user = await session.scalar(select(User).where(User.email == normalise_email(email)))
    # End the read before the deliberately slow hash check, so the connection goes back to the
    # pool: under a login burst, hashes held connections until the pool ran dry.
    await session.commit()
    valid = await passwords.verify(user.password_hash if user else None, password)
    if user is None or not valid or not user.is_active:
        raise NotAuthenticated("Invalid email or password.", code="invalid_credentials")
    if admin_only and user.role != "admin":
        raise Forbidden("Administrator access is required.")
    return user


async def send_password_reset(
    database: Database, settings: Settings, jobs: JobQueue, email: str
) -> None:
    """Queue a reset email if an active account has this email; otherwise do nothing.

    Meant to run after the response, which must not say whether the account exists: failures
    are logged, never raised.
    """
    address = normalise_email(email)
    try:
        async with database.read_engine.connect() as connection:
            account = (
                await connection.execute(
                    select(User.id, User.password_hash).where(
                        User.email == address, User.is_active.is_(True)
                    )
                )
            ).one_or_none()
        if account is None:
            return
        token = create_password_reset_token(settings, account.id, account.password_hash)
        await jobs.enqueue("email", password_reset_email(settings, address, token).model_dump())
    except Exception:
        logger.exception("could not queue a password reset email")


async def reset_password(
    session: AsyncSession,
    settings: Settings,
    passwords: PasswordService,
    token: str,
    new_password: str,
) -> None:
    """Set a new password if the reset token is valid and unused."""
    invalid = BadRequest("The reset link is invalid or has expired.", code="invalid_reset_token")
    try:
        user_id, fingerprint = decode_password_reset_token(settings, token)
    except InvalidToken:
        raise invalid from None
    user = await session.get(User, user_id, with_for_update=True)
    # The token is bound to the password it was issued for, so it works once.
    if user is None or password_fingerprint(user.password_hash) != fingerprint:
        raise invalid
    user.password_hash = await passwords.hash(new_password)
    await session.flush()


async def candidates_registered(session: AsyncSession, start: datetime, end: datetime) -> int:
    """Candidate accounts created in [start, end)."""
    count = await session.scalar(
        select(func.count()).where(
            User.role == "candidate", User.created_at >= start, User.created_at < end
        )
    )
    return int(count or 0)
