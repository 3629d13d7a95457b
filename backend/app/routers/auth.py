"""Registration, login and password reset."""

from fastapi import APIRouter, BackgroundTasks, status

from app.deps import (
    DatabaseDep,
    JobQueueDep,
    PasswordsDep,
    SessionDep,
    SettingsDep,
    TokenVersionsDep,
)
from app.domain import auth
from app.middleware.rate_limiter import AuthLimitsDep, RequestAuthLimits
from app.models import User
from app.schemas.auth import ForgotPasswordIn, LoginIn, RegisterIn, ResetPasswordIn, TokenOut
from app.schemas.common import MessageOut
from app.security import create_access_token

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _token(settings: SettingsDep, user: User) -> TokenOut:
    token, lifetime = create_access_token(
        settings,
        user.id,
        "admin" if user.role == "admin" else "candidate",
        version=user.token_version,
    )
    return TokenOut.model_validate(
        {
            "access_token": token,
            "expires_in": lifetime,
            "user": {
                "id": user.id,
                "email": user.email,
                "full_name": user.full_name,
                "role": user.role,
            },
        }
    )


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(
    body: RegisterIn, session: SessionDep, settings: SettingsDep, passwords: PasswordsDep
) -> TokenOut:
    """Create a candidate account and return an access token (409 if the email is taken)."""
    user = await auth.register_candidate(
        session, passwords, body.email, body.password, body.full_name
    )
    return _token(settings, user)


@router.post("/login")
async def login(
    body: LoginIn,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limits: AuthLimitsDep,
) -> TokenOut:
    """Exchange email and password for an access token (429 login_throttled after too many
    failed logins for the account, except from addresses that logged in to it before)."""
    async with limits.login(auth.normalise_email(body.email)):
        user = await auth.authenticate(session, passwords, body.email, body.password)
    return _token(settings, user)


@router.post("/admin/login")
async def admin_login(
    body: LoginIn,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    limits: AuthLimitsDep,
) -> TokenOut:
    """Like login, for administrator accounts only."""
    async with limits.login(auth.normalise_email(body.email)):
        user = await auth.authenticate(
            session, passwords, body.email, body.password, admin_only=True
        )
    return _token(settings, user)


@router.post("/forgot-password", status_code=status.HTTP_202_ACCEPTED)
async def forgot_password(
    body: ForgotPasswordIn,
    database: DatabaseDep,
    settings: SettingsDep,
    jobs: JobQueueDep,
    background: BackgroundTasks,
    limits: AuthLimitsDep,
) -> MessageOut:
    """Start a password reset. The answer is the same, and as fast, whether or not the account
    exists or the address had its share of reset emails: the checks and the email run after
    the response."""
    background.add_task(_send_reset_email, limits, database, settings, jobs, body.email)
    return MessageOut(message="If an account exists for this email, a reset link is on its way.")


async def _send_reset_email(
    limits: RequestAuthLimits,
    database: DatabaseDep,
    settings: SettingsDep,
    jobs: JobQueueDep,
    email: str,
) -> None:
    """Queue the reset email unless this recipient had its share within the window."""
    if await limits.reset_email_allowed(auth.normalise_email(email)):
        await auth.send_password_reset(database, settings, jobs, email)


@router.post("/reset-password")
async def reset_password(
    body: ResetPasswordIn,
    session: SessionDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    versions: TokenVersionsDep,
) -> MessageOut:
    """Set a new password with the token from the reset email (single use, 30 minutes); the
    account's access tokens stop working."""
    await auth.reset_password(session, settings, passwords, versions, body.token, body.new_password)
    return MessageOut(message="Your password has been changed.")
