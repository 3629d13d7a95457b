"""Registration, login and password reset."""

from fastapi import APIRouter, BackgroundTasks, Request, status

from app.database import SessionDep
from app.deps import SettingsDep
from app.models import User
from app.schemas.auth import ForgotPasswordIn, LoginIn, RegisterIn, ResetPasswordIn, TokenOut
from app.schemas.common import MessageOut
from app.security import create_access_token
from app.services import auth as auth_service
from app.services import email as email_service
from app.services.auth import PasswordService
from app.services.job_queue import JobQueueDep

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _passwords(request: Request) -> PasswordService:
    passwords: PasswordService = request.app.state.passwords
    return passwords


def _token(settings: SettingsDep, user: User) -> TokenOut:
    token, lifetime = create_access_token(
        settings, user.id, "admin" if user.role == "admin" else "candidate"
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
    body: RegisterIn, request: Request, session: SessionDep, settings: SettingsDep
) -> TokenOut:
    """Create a candidate account and return an access token (409 if the email is taken)."""
    user = await auth_service.register_candidate(
        session, _passwords(request), body.email, body.password, body.full_name
    )
    return _token(settings, user)


@router.post("/login")
async def login(
    body: LoginIn, request: Request, session: SessionDep, settings: SettingsDep
) -> TokenOut:
    """Exchange email and password for an access token."""
    user = await auth_service.authenticate(session, _passwords(request), body.email, body.password)
    return _token(settings, user)


@router.post("/admin/login")
async def admin_login(
    body: LoginIn, request: Request, session: SessionDep, settings: SettingsDep
) -> TokenOut:
    """Like login, for administrator accounts only."""
    user = await auth_service.authenticate(
        session, _passwords(request), body.email, body.password, admin_only=True
    )
    return _token(settings, user)


@router.post("/forgot-password", status_code=status.HTTP_202_ACCEPTED)
async def forgot_password(
    body: ForgotPasswordIn,
    session: SessionDep,
    settings: SettingsDep,
    jobs: JobQueueDep,
    background: BackgroundTasks,
) -> MessageOut:
    """Start a password reset. The answer is the same whether or not the account exists."""
    token = await auth_service.request_password_reset(session, settings, body.email)
    if token is not None:
        # Queued after the response, so an existing account does not answer more slowly.
        to = auth_service.normalise_email(body.email)
        background.add_task(email_service.queue_password_reset, jobs, settings, to, token)
    return MessageOut(message="If an account exists for this email, a reset link is on its way.")


@router.post("/reset-password")
async def reset_password(
    body: ResetPasswordIn, request: Request, session: SessionDep, settings: SettingsDep
) -> MessageOut:
    """Set a new password with the token from the reset email (single use, 30 minutes)."""
    await auth_service.reset_password(
        session, settings, _passwords(request), body.token, body.new_password
    )
    return MessageOut(message="Your password has been changed.")
