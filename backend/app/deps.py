"""Typed request dependencies: the one way routes and middleware reach settings and the
process's resources, plus the caller's identity and role checks.

Every dependency is ``async def``, even one that only reads app state: FastAPI runs a plain
``def`` dependency in the thread pool, a thread hop on every request that uses it.
"""

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.config import Settings
from app.database import Area, Database
from app.domain.auth import PasswordService
from app.domain.token_versions import TokenVersions
from app.errors import Forbidden, NotAuthenticated
from app.middleware.shutdown import DrainState
from app.observability.context import set_user_id
from app.resources import Resources
from app.security import InvalidToken, TokenClaims, VerifiedTokens
from app.services.ai import AIService
from app.services.cache import Cache
from app.services.circuit_breaker import BreakerRegistry
from app.services.job_queue import JobQueue
from app.services.storage import Storage

_bearer = HTTPBearer(auto_error=False)


def resources_of(app: Any) -> Resources:
    """The resources an app's lifespan opened (also for pure ASGI middleware: scope["app"])."""
    resources: Resources = app.state.resources
    return resources


def drain_of(app: Any) -> DrainState | None:
    """The web app's shutdown drain state (None for apps without one, e.g. the worker app)."""
    drain = getattr(getattr(app, "state", None), "drain", None)
    return drain if isinstance(drain, DrainState) else None


def settings_of(app: Any) -> Settings:
    """The settings an app was created with."""
    settings: Settings = app.state.settings
    return settings


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return settings_of(request.app)


async def get_database(request: Request) -> Database:
    return resources_of(request.app).database


async def get_cache(request: Request) -> Cache:
    return resources_of(request.app).cache


async def get_storage(request: Request) -> Storage:
    return resources_of(request.app).storage


async def get_job_queue(request: Request) -> JobQueue:
    return resources_of(request.app).jobs


async def get_ai(request: Request) -> AIService:
    return resources_of(request.app).ai


async def get_breakers(request: Request) -> BreakerRegistry:
    return resources_of(request.app).breakers


async def get_passwords(request: Request) -> PasswordService:
    return resources_of(request.app).passwords


def token_versions_of(app: Any) -> TokenVersions:
    """The process's account states that tokens are checked against (app.domain.token_versions)."""
    return resources_of(app).token_versions


async def get_token_versions(request: Request) -> TokenVersions:
    return token_versions_of(request.app)


def session_for(area: Area) -> Callable[[Request], AsyncIterator[AsyncSession]]:
    """The dependency giving each request of `area` one session within the area's share of the
    pool (503 service_busy past the wait); it commits when the route returns, rolls back on
    error.

    Used with ``scope="function"`` so the commit runs before the response is sent: a failing
    commit becomes an error response instead of a 200 for work that was lost.
    """

    async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
        database = resources_of(request.app).database
        async with database.session(area) as session:
            yield session
            await database.commit(session)

    return get_session


async def get_report_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A read-only connection for admin reports and lists: the admin area's share of the pool
    and the longer DB_ADMIN_STATEMENT_TIMEOUT_MS."""
    async with resources_of(request.app).database.report_connection() as connection:
        yield connection


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
CacheDep = Annotated[Cache, Depends(get_cache)]
StorageDep = Annotated[Storage, Depends(get_storage)]
JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]
AIDep = Annotated[AIService, Depends(get_ai)]
BreakersDep = Annotated[BreakerRegistry, Depends(get_breakers)]
PasswordsDep = Annotated[PasswordService, Depends(get_passwords)]
TokenVersionsDep = Annotated[TokenVersions, Depends(get_token_versions)]
# Sessions by area of routes: a lock on one area's tables cannot take the others' connections.
SessionDep = Annotated[AsyncSession, Depends(session_for("default"), scope="function")]
AssessmentSessionDep = Annotated[
    AsyncSession, Depends(session_for("assessments"), scope="function")
]
AdminSessionDep = Annotated[AsyncSession, Depends(session_for("admin"), scope="function")]
ReportConnDep = Annotated[AsyncConnection, Depends(get_report_connection, scope="function")]


def verify_bearer(tokens: VerifiedTokens, credentials: HTTPAuthorizationCredentials) -> TokenClaims:
    """The claims of a bearer token; 401 `invalid_token` if it is forged, expired or malformed.

    Signature and claims only: routes use get_current_user, which also checks the account.
    """
    try:
        return tokens.claims(credentials.credentials)
    except InvalidToken:
        raise NotAuthenticated(
            "The access token is invalid or expired.", code="invalid_token"
        ) from None


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenClaims:
    """The verified identity of the caller: the one place a bearer token is accepted.

    401 without a valid token, and 401 `invalid_token` when its account no longer backs it:
    gone, deactivated, another role, or a newer token version (password reset, role change,
    deactivation). The account's state comes from this process's copy (no round trip) while it
    is fresh, see app.domain.token_versions.
    """
    if credentials is None:
        raise NotAuthenticated()
    resources = resources_of(request.app)
    claims = verify_bearer(resources.access_tokens, credentials)
    account = await resources.token_versions.state(claims.user_id, newer_than=claims.version)
    if (
        account is None
        or not account.active
        or account.version != claims.version
        or account.role != claims.role
    ):
        raise NotAuthenticated("The access token is invalid or expired.", code="invalid_token")
    set_user_id(claims.user_id)  # the rest of the request's log lines carry the user
    return claims


CurrentUser = Annotated[TokenClaims, Depends(get_current_user)]


async def require_candidate(user: CurrentUser) -> TokenClaims:
    """Only candidates (403 for admins)."""
    if user.role != "candidate":
        raise Forbidden("This route is for candidates.")
    return user


async def require_admin(user: CurrentUser) -> TokenClaims:
    """Only admins (403 for candidates)."""
    if user.role != "admin":
        raise Forbidden("Administrator access is required.")
    return user


CandidateUser = Annotated[TokenClaims, Depends(require_candidate)]
AdminUser = Annotated[TokenClaims, Depends(require_admin)]
