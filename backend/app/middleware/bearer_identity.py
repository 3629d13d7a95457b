"""The user a request's Bearer token names, for middleware that keys clients by who they are.

Only the signature, expiry and claims are checked (no database): enough to key a limit, never
to authorise. A process sees the same tokens over and over, so a verified token's identity is
kept until the token expires, and a request costs one dict lookup instead of an HMAC and a JSON
parse.
"""

from collections.abc import Iterable

from app.config import Settings
from app.security import InvalidToken, VerifiedTokens

_BEARER = b"bearer "


def authorization_of(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The value of an ASGI request's (last) Authorization header, if any."""
    authorization: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value
    return authorization


class BearerIdentities:
    """Verified Bearer tokens -> user ids, cached per process until each token expires.

    `expired_leeway_seconds` also accepts tokens expired for at most that long (the load
    shedder's "was taking a test" check); zero for anything that keys a limit."""

    def __init__(self, settings: Settings, expired_leeway_seconds: int = 0) -> None:
        self._tokens = VerifiedTokens(settings.jwt_signing_key, expired_leeway_seconds)

    def user_id_of(self, authorization: bytes) -> int | None:
        """The user id of a valid Bearer token; None for anything else."""
        if authorization[:7].lower() != _BEARER:
            return None
        try:
            return self._tokens.claims(authorization[7:].strip().decode("latin-1")).user_id
        except InvalidToken:
            return None

    def user_of(self, authorization: bytes) -> str | None:
        """The identity ("u:<user id>") of a valid Bearer token's user; None for anything else."""
        user_id = self.user_id_of(authorization)
        return None if user_id is None else f"u:{user_id}"
