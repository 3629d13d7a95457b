"""The rate limiter's table: tiers and the path rules that pick a tier, tunable from settings.

The defaults (tokens per minute, each bucket holding a minute's worth): auth 10, ai_heavy 5,
upload 20, read 200, write 60, default 100. Every value can be replaced through the environment
as JSON, e.g. ``RATE_LIMIT_TIERS='{"auth": {"capacity": 10, "refill": 10, "key_by": "ip"}, ...}'``;
the whole table is validated when the app is built, so a typo fails at startup rather than per
request.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BucketLimit(BaseModel):
    """A token bucket: `capacity` tokens, refilled at `refill` tokens every `period_seconds`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    capacity: int = Field(ge=1)
    refill: int = Field(ge=1)
    period_seconds: int = Field(60, ge=1)


class RateLimitTier(BucketLimit):
    """One category's limits: per identity, plus optional per-IP and global buckets.

    A request consumes one token from every configured bucket, all or nothing. `shadow` decides and
    counts refusals in metrics but never refuses, so new limits can be tried in production.
    `key_by` names the identity: "user" is a valid bearer token's user, else the client address;
    "ip" is always the client address, so a caller cannot buy budget by sending tokens (the auth
    routes, where any throwaway account's token would otherwise open a fresh bucket).
    """

    per_ip: BucketLimit | None = None
    global_bucket: BucketLimit | None = None
    shadow: bool = False
    key_by: Literal["user", "ip"] = "user"


class PathRule(BaseModel):
    """Paths starting with `prefix` (and containing `contains`, when set) belong to `category`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str
    contains: str = ""
    category: str


DEFAULT_TIERS: dict[str, RateLimitTier] = {
    "auth": RateLimitTier(capacity=10, refill=10, key_by="ip"),
    "ai_heavy": RateLimitTier(capacity=5, refill=5),
    "upload": RateLimitTier(capacity=20, refill=20),
    "read": RateLimitTier(capacity=200, refill=200),
    "write": RateLimitTier(capacity=60, refill=60),
    "default": RateLimitTier(capacity=100, refill=100),
}

DEFAULT_EXACT_PATHS: dict[str, str] = {
    "/api/auth/login": "auth",
    "/api/auth/admin/login": "auth",
    "/api/auth/register": "auth",
    "/api/auth/forgot-password": "auth",
    "/api/auth/reset-password": "auth",
    "/api/profile/resume": "ai_heavy",
    "/api/admin/ai-generate": "ai_heavy",
    "/api/profile/resume-status": "read",
    "/api/jobs": "read",
    "/api/tests/available": "read",
    "/api/tests/submit": "write",
    "/api/tests/complete": "write",
}

# Checked in order after the exact paths.
DEFAULT_PREFIX_RULES: list[PathRule] = [
    PathRule(prefix="/api/admin/", category="write"),
    PathRule(prefix="/api/tests/", contains="/answer", category="write"),
    PathRule(prefix="/uploads/", category="upload"),
]

DEFAULT_METHOD_CATEGORIES: dict[str, str] = {
    "GET": "read",
    "HEAD": "read",
    "POST": "write",
    "PUT": "write",
    "PATCH": "write",
    "DELETE": "write",
}

DEFAULT_EXEMPT_PATHS: list[str] = [
    "/",
    "/health",
    "/health/ready",
    "/health/detailed",
    "/metrics",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
]
