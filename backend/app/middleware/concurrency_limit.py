"""The fleet-wide concurrent-request limit per identity, as pure ASGI middleware: the HTTP side of
app/services/ratelimit/concurrency.py.

Per request (outside CONCURRENCY_LIMIT_EXEMPT_PATHS): the identity is the user of a valid Bearer
token, else the client address (read through the trusted proxies, as the rate limiter reads it).
A lease is taken before the app runs and given back when the app returns, however it returns:
response sent, exception, cancellation. A client that disconnects ends its lease when its
request's work ends: at once when the app notices (a cut-off upload, a streaming response),
otherwise when the handler finishes. A slot is work in progress, so leaving early must not free
it while the work goes on. Refusals get 429 `too_many_concurrent_requests` with Retry-After.

The app mounts it inside the rate limiter: a request refused per minute never takes a lease.
"""

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.deps import resources_of
from app.error_handlers import error_response
from app.middleware.bearer_identity import BearerIdentities, authorization_of
from app.middleware.client_ip import client_ip_for, forwarded_for, peer_of
from app.observability.metrics import CONCURRENCY_LIMIT_DECISIONS
from app.services.ratelimit.concurrency import ConcurrencyLimiter
from app.services.redis import RedisService

# In-flight requests end within moments; a refused client may try again right after.
RETRY_AFTER_SECONDS = 1


class ConcurrencyLimitMiddleware:
    """Pure ASGI per-identity concurrency limit. Uses the given RedisService, else the app's
    (app.deps); without REDIS_URL it counts in-process at the full limit."""

    def __init__(self, app: ASGIApp, settings: Settings, redis: RedisService | None = None) -> None:
        self.app = app
        self._settings = settings
        self._enabled = settings.concurrency_limit_enabled
        self._exempt = frozenset(settings.concurrency_limit_exempt_paths)
        self._user_limit = settings.concurrency_limit_per_user
        self._address_limit = settings.concurrency_limit_per_address
        self._client_ip = client_ip_for(settings)
        self._users = BearerIdentities(settings)
        self._given_redis = redis
        self._limiter: ConcurrencyLimiter | None = None
        self._counters: dict[tuple[str, str, str], Callable[[], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._enabled or scope["path"] in self._exempt:
            await self.app(scope, receive, send)
            return
        authorization = authorization_of(scope["headers"])
        user = self._users.user_of(authorization) if authorization else None
        if user is not None:
            identity, limit, kind = user, self._user_limit, "user"
        else:
            address = self._client_ip(peer_of(scope), forwarded_for(scope["headers"]))
            identity, limit, kind = f"ip:{address}", self._address_limit, "address"
        limiter = self._limiter_for(scope)
        admission = await limiter.acquire(identity, limit)
        lease = admission.lease
        self._count(kind, "refused" if lease is None else "admitted", admission.source)
        if lease is None:
            # A new response each time: outer middleware may change a response's header list.
            refusal = error_response(
                429,
                "too_many_concurrent_requests",
                "Too many requests in progress at once. Retry when one has finished.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                retry_after=RETRY_AFTER_SECONDS,
            )
            await refusal(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            # Not awaited, so no cancellation (even a repeated one) can skip it.
            limiter.release(lease)

    def _limiter_for(self, scope: Scope) -> ConcurrencyLimiter:
        redis = self._given_redis or resources_of(scope["app"]).redis
        limiter = self._limiter
        if limiter is None or limiter.redis is not redis:
            # One limiter per RedisService: the app's lifespan opens a new one at each start.
            limiter = self._limiter = ConcurrencyLimiter(self._settings, redis)
        return limiter

    def _count(self, kind: str, outcome: str, source: str) -> None:
        key = (kind, outcome, source)
        increment = self._counters.get(key)
        if increment is None:
            increment = self._counters[key] = CONCURRENCY_LIMIT_DECISIONS.labels(*key).inc
        increment()
