"""Accounts: registration, login and password resets."""

import asyncio
import logging
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.database import Database
from app.domain import profiles
from app.domain.emails import password_reset_email
from app.domain.password_policy import check_new_password
from app.domain.token_versions import TokenVersions
from app.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    LoginOverloaded,
    NotAuthenticated,
    NotFound,
)
from app.models import User
from app.observability.metrics import (
    PASSWORD_HASHES_IN_FLIGHT,
    PASSWORD_HASHES_QUEUED,
    PASSWORD_HASHES_SHED,
)
from app.security import (
    InvalidToken,
    create_password_reset_token,
    decode_password_reset_token,
    password_fingerprint,
    password_hasher,
    verify_password,
)
from app.services.job_queue import JobQueue

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class PasswordService:
    """Argon2 hashing off the event loop, in this process's own small pool of threads.

    At most `concurrency` hashes run at once and `queue_max` more wait for a thread. A call
    beyond that, or one still waiting after `wait_seconds`, raises LoginOverloaded (503 with
    Retry-After) at once: a login burst gets a bounded share of the CPU and a bounded queue,
    and requests that hash nothing (every token-bearing one) never wait behind it.
    """

    def __init__(
        self, hasher: PasswordHasher, *, concurrency: int, queue_max: int, wait_seconds: float
    ) -> None:
        self._hasher = hasher
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="password-hash")
        self._capacity = concurrency + queue_max
        self._wait_seconds = wait_seconds
        # Hashes admitted and not yet finished or dropped; decremented in the hash threads.
        self._admitted = 0
        self._lock = threading.Lock()
        # Verified against when the email is unknown, so both paths cost the same time.
        self._dummy_hash = hasher.hash("timing-equaliser")

    @classmethod
    def for_settings(cls, settings: Settings) -> "PasswordService":
        """The service with the configured argon2 cost and PASSWORD_HASH_* bounds."""
        return cls(
            password_hasher(settings),
            concurrency=settings.password_hash_concurrency,
            queue_max=settings.password_hash_queue_max,
            wait_seconds=settings.password_hash_wait_seconds,
        )

    async def hash(self, password: str) -> str:
        """The argon2 hash of `password`; LoginOverloaded when hashing is full."""
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; an unknown account (None) costs the same and is False.
        LoginOverloaded when hashing is full."""
        target = password_hash or self._dummy_hash
        ok = await self._run(verify_password, self._hasher, target, password)
        return ok and password_hash is not None

    def close(self) -> None:
        """Stop the threads once their running hash ends; queued hashes are dropped."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            if self._admitted >= self._capacity:
                PASSWORD_HASHES_SHED.labels("queue_full").inc()
                raise LoginOverloaded()
            self._admitted += 1
        PASSWORD_HASHES_QUEUED.inc()
        job = self._threads.submit(self._hash_thread, function, *args)
        job.add_done_callback(self._finished)
        result = asyncio.wrap_future(job)
        try:
            done, _ = await asyncio.wait((result,), timeout=self._wait_seconds)
        except asyncio.CancelledError:
            job.cancel()  # nobody waits for it any more: drop it unless it started
            raise
        # cancel() succeeds only for a hash that has not started; a running one is awaited.
        if not done and job.cancel():
            PASSWORD_HASHES_SHED.labels("wait_timeout").inc()
            raise LoginOverloaded()
        return await result

    @staticmethod
    def _hash_thread(function: Callable[..., _T], *args: Any) -> _T:
        PASSWORD_HASHES_QUEUED.dec()
        PASSWORD_HASHES_IN_FLIGHT.inc()
        try:
            return function(*args)
        finally:
            PASSWORD_HASHES_IN_FLIGHT.dec()

    def _finished(self, job: Future[Any]) -> None:
        # In a hash thread when the hash ends; in the caller's when a waiting one is dropped.
        if job.cancelled():
            PASSWORD_HASHES_QUEUED.dec()
        with self._lock:
            self._admitted -= 1


def normalise_email(email: str) -> str:
    """The one stored form of an address: stripped, NFKC-normalised and case-folded, so
    look-alikes (full-width letters, other case, "ß" and "ss") are one account. The last NFKC
    keeps the result stable when normalised again (case folding can leave a non-NFKC string)."""
    folded = unicodedata.normalize("NFKC", email.strip()).casefold()
    return unicodedata.normalize("NFKC", folded)


def _stored_forms(email: str) -> list[str]:
    """The forms an account's address may be stored in: normalised, and lower-cased as it was
    stored before normalisation (rows not yet normalised keep working)."""
    normalised, legacy = normalise_email(email), email.strip().lower()
    return [normalised] if legacy == normalised else [normalised, legacy]


async def register_candidate(
    session: AsyncSession, passwords: PasswordService, email: str, password: str, full_name: str
) -> User:
    """Create a candidate and an empty profile; WeakPassword (422) if the password breaks the
    policy, Conflict if the email is taken."""
    email = normalise_email(email)
    check_new_password(password, email)
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
    forms = _stored_forms(email)
    found = await session.scalars(select(User).where(User.email.in_(forms)))
    users = {user.email: user for user in found}
    user = next((users[form] for form in forms if form in users), None)
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
    forms = _stored_forms(email)
    try:
        async with database.read_engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(User.id, User.email, User.password_hash).where(
                        User.email.in_(forms), User.is_active.is_(True)
                    )
                )
            ).all()
        accounts = {row.email: row for row in rows}
        account = next((accounts[form] for form in forms if form in accounts), None)
        if account is None:
            return
        token = create_password_reset_token(settings, account.id, account.password_hash)
        email_job = password_reset_email(settings, account.email, token)
        await jobs.enqueue("email", email_job.model_dump())
    except Exception:
        logger.exception("could not queue a password reset email")


async def reset_password(
    session: AsyncSession,
    settings: Settings,
    passwords: PasswordService,
    versions: TokenVersions,
    token: str,
    new_password: str,
) -> None:
    """Set a new password if the reset token is valid and unused (WeakPassword if it breaks the
    policy); the account's access tokens stop working."""
    invalid = BadRequest("The reset link is invalid or has expired.", code="invalid_reset_token")
    try:
        user_id, fingerprint = decode_password_reset_token(settings, token)
    except InvalidToken:
        raise invalid from None
    # The token is bound to the password it was issued for, so it works once.
    user = await session.get(User, user_id)
    if user is None or password_fingerprint(user.password_hash) != fingerprint:
        raise invalid
    check_new_password(new_password, normalise_email(user.email))
    # Hash with no transaction open (no row lock, no pooled connection held, as in
    # authenticate), then lock the row and check again: a concurrent reset may have used the
    # token meanwhile.
    await session.commit()
    new_hash = await passwords.hash(new_password)
    user = await session.get(User, user_id, with_for_update=True, populate_existing=True)
    if user is None or password_fingerprint(user.password_hash) != fingerprint:
        raise invalid
    user.password_hash = new_hash
    _end_sessions(session, versions, user)
    await session.flush()


def _end_sessions(session: AsyncSession, versions: TokenVersions, user: User) -> None:
    """Bump the account's token version in this transaction: tokens issued before stop working
    once it commits (every process within TOKEN_VERSION_LOCAL_TTL_SECONDS)."""
    user.token_version += 1
    versions.changed_on_commit(session, user)


async def change_account(
    session: AsyncSession,
    versions: TokenVersions,
    admin_id: int,
    user_id: int,
    changes: dict[str, object],
) -> User:
    """An admin's change of an account's `is_active` and/or `role`. A real change ends the
    account's sessions; an admin cannot deactivate or demote themselves (Forbidden)."""
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFound("The user was not found.")
    changed = {name: value for name, value in changes.items() if getattr(user, name) != value}
    if user.id == admin_id and changed:
        raise Forbidden("Administrators cannot deactivate or demote themselves.")
    if changed:
        for name, value in changed.items():
            setattr(user, name, value)
        _end_sessions(session, versions, user)
        await session.flush()
        # The audit record of an admin action.
        logger.warning(
            "account %s changed by admin %s: %s",
            user.id,
            admin_id,
            ", ".join(f"{name}={value}" for name, value in sorted(changed.items())),
            extra={
                "event": "account_changed",
                "user_id_changed": user.id,
                "admin_user_id": admin_id,
                "fields": sorted(changed),
            },
        )
    return user


async def candidates_registered(session: AsyncSession, start: datetime, end: datetime) -> int:
    """Candidate accounts created in [start, end)."""
    count = await session.scalar(
        select(func.count()).where(
            User.role == "candidate", User.created_at >= start, User.created_at < end
        )
    )
    return int(count or 0)
