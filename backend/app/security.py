"""Password hashing (argon2id) and HS256 access tokens (PyJWT)."""

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.config import Settings

Role = Literal["candidate", "admin"]
JWT_ALGORITHM = "HS256"
_ROLES: frozenset[str] = frozenset({"candidate", "admin"})
# User ids are BIGINT: a `sub` is a plain ASCII decimal in 1..2**63-1 (no sign, no leading zero,
# no other script's digits, which str.isdigit() and int() accept), so it can never overflow a query.
_USER_ID = re.compile(r"[1-9][0-9]{0,18}")
_BIGINT_MAX = 2**63 - 1
# users.token_version is a 32-bit INTEGER.
_VERSION_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """The verified claims of an access token."""

    user_id: int
    role: Role
    expires_at: datetime
    # The account's token_version when the token was issued (0 for tokens without the claim).
    version: int = 0


class InvalidToken(Exception):
    """The token is malformed, forged, expired or carries unusable claims."""


def password_hasher(settings: Settings) -> PasswordHasher:
    """An argon2id hasher with the configured cost."""
    return PasswordHasher(
        time_cost=settings.password_hash_time_cost,
        memory_cost=settings.password_hash_memory_kib,
        parallelism=1,
    )


def verify_password(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    """True when `password` matches `password_hash`; never raises on a bad hash."""
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_access_token(
    settings: Settings,
    user_id: int,
    role: Role,
    now: datetime | None = None,
    *,
    version: int = 0,
) -> tuple[str, int]:
    """Sign an access token for the account's current token `version`; returns it with its
    lifetime in seconds."""
    issued = now or datetime.now(UTC)
    lifetime = settings.access_token_expire_minutes * 60
    claims = {
        "sub": str(user_id),
        "role": role,
        "ver": version,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(seconds=lifetime)).timestamp()),
    }
    return jwt.encode(claims, settings.jwt_signing_key(), algorithm=JWT_ALGORITHM), lifetime


def decode_access_token(settings: Settings, token: str) -> TokenClaims:
    """Verify signature, expiry and claims; raise InvalidToken otherwise."""
    return decode_access_token_with_key(settings.jwt_signing_key(), token)


def decode_access_token_with_key(key: str, token: str, leeway_seconds: int = 0) -> TokenClaims:
    """Like decode_access_token, for hot paths that hold the key already. A token expired for
    at most `leeway_seconds` still decodes (for prioritising only, never to authorise)."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "exp", "iat"]},
            leeway=leeway_seconds,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    role, version = claims.get("role"), claims.get("ver", 0)
    # bool is an int subclass: a `true` version is as unusable as a string one.
    if role not in _ROLES or type(version) is not int or not 0 <= version <= _VERSION_MAX:
        raise InvalidToken("unusable claims")
    return TokenClaims(
        user_id=parse_user_id(claims.get("sub")),
        role=role,
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        version=version,
    )


class VerifiedTokens:
    """Access tokens verified once per process: a token's claims are kept until it expires, so
    a request carrying a token seen before costs a dict lookup instead of an HMAC and a JSON
    parse. Only the signature and claims are cached; whether the account still backs the token
    is checked per request (app.domain.token_versions)."""

    _MAX_ENTRIES = 10_000

    def __init__(self, signing_key: Callable[[], str], leeway_seconds: int = 0) -> None:
        self._signing_key = signing_key
        self._leeway = leeway_seconds
        self._key: str | None = None
        self._claims: dict[str, tuple[TokenClaims, float]] = {}

    def claims(self, token: str) -> TokenClaims:
        """The claims of a valid token (expired for at most the leeway); InvalidToken else."""
        cached = self._claims.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        if self._key is None:
            # Read on first use: in development without JWT_SECRET it is a file in data_dir.
            self._key = self._signing_key()
        claims = decode_access_token_with_key(self._key, token, self._leeway)
        if len(self._claims) >= self._MAX_ENTRIES:
            self._claims.clear()
        self._claims[token] = (claims, claims.expires_at.timestamp() + self._leeway)
        return claims


def parse_user_id(sub: object) -> int:
    """The user id a token's `sub` names; InvalidToken unless it is a plain decimal id."""
    if not isinstance(sub, str) or not _USER_ID.fullmatch(sub):
        raise InvalidToken("unusable subject")
    user_id = int(sub)
    if user_id > _BIGINT_MAX:
        raise InvalidToken("unusable subject")
    return user_id


PASSWORD_RESET_PURPOSE = "password_reset"
PASSWORD_RESET_LIFETIME = timedelta(minutes=30)


def password_fingerprint(password_hash: str) -> str:
    """A short digest of the stored hash: a reset token dies once the password changes."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def create_password_reset_token(settings: Settings, user_id: int, password_hash: str) -> str:
    """A single-use (bound to the current password), 30-minute reset token."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "purpose": PASSWORD_RESET_PURPOSE,
        "pwf": password_fingerprint(password_hash),
        "iat": int(now.timestamp()),
        "exp": int((now + PASSWORD_RESET_LIFETIME).timestamp()),
    }
    return jwt.encode(claims, settings.jwt_signing_key(), algorithm=JWT_ALGORITHM)


def decode_password_reset_token(settings: Settings, token: str) -> tuple[int, str]:
    """The user id and password fingerprint of a valid reset token; InvalidToken otherwise."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_signing_key(),
            algorithms=[JWT_ALGORITHM],
            options={"require": ["sub", "exp", "purpose", "pwf"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims["purpose"] != PASSWORD_RESET_PURPOSE:
        raise InvalidToken("not a reset token")
    return parse_user_id(claims["sub"]), str(claims["pwf"])
