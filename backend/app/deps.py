"""Request dependencies: settings, the current user and role checks."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.errors import Forbidden, NotAuthenticated
from app.middleware.request_context import set_user_id
from app.security import InvalidToken, TokenClaims, decode_access_token

_bearer = HTTPBearer(auto_error=False)


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def verify_bearer(settings: Settings, credentials: HTTPAuthorizationCredentials) -> TokenClaims:
    """The claims of a bearer token; 401 `invalid_token` if it is forged, expired or malformed."""
    try:
        return decode_access_token(settings, credentials.credentials)
    except InvalidToken:
        raise NotAuthenticated(
            "The access token is invalid or expired.", code="invalid_token"
        ) from None


def get_current_user(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenClaims:
    """The verified identity of the caller (401 without a valid bearer token)."""
    if credentials is None:
        raise NotAuthenticated()
    claims = verify_bearer(settings, credentials)
    set_user_id(claims.user_id)  # the rest of the request's log lines carry the user
    return claims


CurrentUser = Annotated[TokenClaims, Depends(get_current_user)]


def require_candidate(user: CurrentUser) -> TokenClaims:
    """Only candidates (403 for admins)."""
    if user.role != "candidate":
        raise Forbidden("This route is for candidates.")
    return user


def require_admin(user: CurrentUser) -> TokenClaims:
    """Only admins (403 for candidates)."""
    if user.role != "admin":
        raise Forbidden("Administrator access is required.")
    return user


CandidateUser = Annotated[TokenClaims, Depends(require_candidate)]
AdminUser = Annotated[TokenClaims, Depends(require_admin)]
