"""Rate limiting as pure ASGI middleware: the HTTP side of the engine in app/services/ratelimit.

Per request: pick the category from the path rules, key the request by its verified user (or its
client IP; always the client IP in a tier with key_by="ip"), and ask the RateLimiter for a
decision. Refusals get a 429 in the shared error shape; every limited response carries
X-RateLimit-* and the IETF RateLimit-Policy / RateLimit fields. The auth routes' own limits (failed
logins per account and address, reset e-mails per recipient) reach them through AuthLimitsDep.

Client IP: X-Forwarded-For read right to left through TRUSTED_PROXY_COUNT hops (or past the
TRUSTED_PROXY_CIDRS networks), because every proxy appends the address it saw and only the
right-most entries were written by our own proxies. On Elastic Beanstalk the ALB appends the
client and the on-instance nginx appends the ALB: 2 hops.
"""

from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.config.rate_limits import RateLimitTier
from app.deps import resources_of
from app.error_handlers import error_response
from app.middleware.bearer_identity import BearerIdentities, authorization_of
from app.middleware.client_ip import client_ip_for, forwarded_for, peer_of
from app.services.ratelimit.auth_limits import AuthLimits
from app.services.ratelimit.buckets import Decision, ceil_seconds
from app.services.ratelimit.limiter import RateLimiter
from app.services.ratelimit.rules import RateLimitRules
from app.services.redis import RedisService


class _TierHeaders:
    """Precomputed per-category header values, and whether the tier only shadows."""

    __slots__ = ("by_ip", "category", "limit", "name", "policy", "shadow")

    def __init__(self, category: str, tier: RateLimitTier) -> None:
        self.category = category
        self.shadow = tier.shadow
        self.by_ip = tier.key_by == "ip"
        self.limit = str(tier.capacity).encode()
        # IETF draft: quota q per window w seconds, i.e. the sustained rate (refill per period).
        self.policy = f'"{category}";q={tier.refill};w={tier.period_seconds}'.encode()
        self.name = f'"{category}"'.encode()


class RateLimitMiddleware:
    """Pure ASGI rate limiter. Uses the given RedisService, else the app's (app.deps); without
    REDIS_URL it limits in-process at the full limit."""

    def __init__(self, app: ASGIApp, settings: Settings, redis: RedisService | None = None) -> None:
        self.app = app
        self._enabled = settings.rate_limit_enabled
        self._settings = settings
        self._rules = RateLimitRules(
            tiers=settings.rate_limit_tiers,
            exact_paths=settings.rate_limit_exact_paths,
            prefix_rules=settings.rate_limit_prefix_rules,
            method_categories=settings.rate_limit_method_categories,
            exempt_paths=settings.rate_limit_exempt_paths,
        )
        self._tiers = {name: _TierHeaders(name, tier) for name, tier in self._rules.tiers.items()}
        self._client_ip = client_ip_for(settings)
        self._given_redis = redis
        self._limiter: RateLimiter | None = None
        self._users = BearerIdentities(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._enabled:
            await self.app(scope, receive, send)
            return
        category = self._rules.category(scope["method"], scope["path"])
        if category is None:
            await self.app(scope, receive, send)
            return
        tier = self._tiers[category]
        authorization = None if tier.by_ip else authorization_of(scope["headers"])
        ip = self._client_ip(peer_of(scope), forwarded_for(scope["headers"]))
        user = self._users.user_of(authorization) if authorization else None
        redis = self._given_redis or resources_of(scope["app"]).redis
        limiter = self._limiter
        if limiter is None or limiter.redis is not redis:
            # One engine per RedisService: the app's lifespan opens a new one at each start.
            limiter = self._limiter = RateLimiter(self._settings, redis)
        decision = await limiter.decide(category, user or f"ip:{ip}", ip)
        if decision.allowed or tier.shadow:
            await self.app(scope, receive, self._with_headers(send, tier, decision))
        else:
            await self._refuse(tier, decision)(scope, receive, send)

    @staticmethod
    def _headers(tier: _TierHeaders, decision: Decision) -> list[tuple[bytes, bytes]]:
        remaining = str(max(0, decision.remaining)).encode()
        # Seconds until the bucket is full again; on a refusal, until the next token exists.
        if decision.allowed:
            reset = str(ceil_seconds(decision.reset_us)).encode()
        else:
            reset = str(max(1, ceil_seconds(decision.retry_after_us))).encode()
        return [
            (b"x-ratelimit-limit", tier.limit),
            (b"x-ratelimit-remaining", remaining),
            (b"x-ratelimit-reset", reset),
            (b"ratelimit-policy", tier.policy),
            (b"ratelimit", tier.name + b";r=" + remaining + b";t=" + reset),
        ]

    def _refuse(self, tier: _TierHeaders, decision: Decision) -> Response:
        retry_after = max(1, ceil_seconds(decision.retry_after_us))
        response = error_response(
            429,
            "rate_limited",
            f"Too many requests. Retry in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
            category=tier.category,
        )
        response.raw_headers.extend(self._headers(tier, decision))
        return response

    def _with_headers(self, send: Send, tier: _TierHeaders, decision: Decision) -> Send:
        headers = self._headers(tier, decision)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        return send_with_headers


class RequestAuthLimits:
    """The auth limits (failed logins, reset e-mails) as one request of an auth route sees them:
    keyed by its client address, never by a token. No limits when RATE_LIMIT_ENABLED is false."""

    def __init__(self, limits: AuthLimits | None, address: str) -> None:
        self._limits = limits
        self._address = address

    def login(self, account: str) -> AbstractAsyncContextManager[None]:
        """Guard a login for `account`, the normalised e-mail (see AuthLimits.login)."""
        if self._limits is None:
            return nullcontext()
        return self._limits.login(account, self._address)

    async def reset_email_allowed(self, recipient: str) -> bool:
        """Whether a reset e-mail to `recipient` (normalised) may go out (AuthLimits)."""
        if self._limits is None:
            return True
        return await self._limits.reset_email_allowed(recipient)


async def get_auth_limits(request: Request) -> RequestAuthLimits:
    """The request's auth limits: one AuthLimits per app and RedisService (a new one per
    lifespan), and the client address read exactly as the limiter reads it."""
    settings: Settings = request.app.state.settings
    if not settings.rate_limit_enabled:
        return RequestAuthLimits(None, "")
    redis = resources_of(request.app).redis
    limits: AuthLimits | None = getattr(request.app.state, "auth_limits", None)
    if limits is None or limits.redis is not redis:
        limits = request.app.state.auth_limits = AuthLimits(settings, redis)
    scope = request.scope
    address = client_ip_for(settings)(peer_of(scope), forwarded_for(scope["headers"]))
    return RequestAuthLimits(limits, address)


AuthLimitsDep = Annotated[RequestAuthLimits, Depends(get_auth_limits)]
