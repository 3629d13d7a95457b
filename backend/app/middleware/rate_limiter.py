"""Distributed token-bucket rate limiting as pure ASGI middleware.

Per request: pick the category from the path rules, key the request by its verified user (or its
client IP), and take one token from its buckets in Redis (one atomic script; see
app/services/rate_limit_buckets.py). Refusals get a 429 in the shared error shape; every limited
response carries X-RateLimit-* and the IETF RateLimit-Policy / RateLimit fields.

Redis modes: no REDIS_URL -> in-process buckets at the full limit (a single dev process); Redis
configured but down -> in-process buckets at 1/RATE_LIMIT_EXPECTED_PROCESSES of each tier until
the RedisService back-off ends, then back to Redis by itself.

Client IP: X-Forwarded-For read right to left through TRUSTED_PROXY_COUNT hops (or past the
TRUSTED_PROXY_CIDRS networks), because every proxy appends the address it saw and only the
right-most entries were written by our own proxies. On Elastic Beanstalk the ALB appends the
client and the on-instance nginx appends the ALB: 2 hops.
"""

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.config.rate_limits import RateLimitTier
from app.deps import resources_of
from app.error_handlers import error_response
from app.middleware.client_ip import ClientIP
from app.security import InvalidToken, decode_access_token_with_key
from app.services.ratelimit.buckets import (
    BucketSpecs,
    Decision,
    DecisionRequest,
    DenialCache,
    LocalBuckets,
    RedisBuckets,
    ceil_seconds,
    now_us,
)
from app.services.ratelimit.rules import RateLimitRules
from app.services.redis import RedisService

logger = logging.getLogger(__name__)

RATE_LIMIT_DECISIONS = Counter(
    "hiringpro_rate_limit_decisions_total",
    "Rate-limit decisions by category, outcome (allowed, limited, shadow_limited) and source "
    "(redis, denial_cache, local = no Redis configured, fallback = Redis down).",
    ["category", "outcome", "source"],
)

_TOKEN_CACHE_MAX = 10_000
_BEARER = b"bearer "


class _TierPlan:
    """Precomputed per-category data: bucket specs, key layout and header values."""

    def __init__(self, category: str, tier: RateLimitTier) -> None:
        self.category = category
        self.tier = tier
        specs = [(tier.capacity, tier.refill, tier.period_seconds * 1_000_000)]
        if tier.per_ip is not None:
            bucket = tier.per_ip
            specs.append((bucket.capacity, bucket.refill, bucket.period_seconds * 1_000_000))
        if tier.global_bucket is not None:
            bucket = tier.global_bucket
            specs.append((bucket.capacity, bucket.refill, bucket.period_seconds * 1_000_000))
        self.specs = BucketSpecs(specs)
        # Cluster: all keys of one decision must share a hash tag. A single-bucket tier tags by
        # identity (spreads over slots); a multi-bucket tier tags by category (one slot).
        self.multi = len(specs) > 1
        self.limit = str(tier.capacity).encode()
        # IETF draft: quota q per window w seconds, i.e. the sustained rate (refill per period).
        self.policy = f'"{category}";q={tier.refill};w={tier.period_seconds}'.encode()
        self.name = f'"{category}"'.encode()

    def request(self, identity: str, ip: str) -> DecisionRequest:
        category = self.category
        if not self.multi:
            return DecisionRequest(keys=(f"rl:{{{category}:{identity}}}",), specs=self.specs)
        keys = [f"rl:{{{category}}}:{identity}"]
        if self.tier.per_ip is not None:
            # Never the identity key (anonymous identities are "ip:..."): one decision must not
            # name a key twice.
            keys.append(f"rl:{{{category}}}:per-ip:{ip}")
        if self.tier.global_bucket is not None:
            keys.append(f"rl:{{{category}}}:global")
        return DecisionRequest(keys=tuple(keys), specs=self.specs)


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
        self._plans = {name: _TierPlan(name, tier) for name, tier in self._rules.tiers.items()}
        self._client_ip = ClientIP(settings.trusted_proxy_count, settings.trusted_proxy_cidrs)
        self._share = settings.rate_limit_expected_processes
        self._given_redis = redis
        self._redis_buckets: RedisBuckets | None = None
        self._local = LocalBuckets(settings.rate_limit_local_max_keys)
        self._denials = DenialCache(settings.rate_limit_local_max_keys)
        self._jwt_key: str | None = None
        self._tokens: dict[bytes, tuple[str, float]] = {}
        self._in_fallback = False
        self._counters: dict[tuple[str, str, str], Callable[[], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._enabled:
            await self.app(scope, receive, send)
            return
        category = self._rules.category(scope["method"], scope["path"])
        if category is None:
            await self.app(scope, receive, send)
            return
        plan = self._plans[category]
        authorization: bytes | None = None
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"x-forwarded-for":
                forwarded.append(value)
        peer = scope.get("client")
        ip = self._client_ip(
            peer[0] if peer else None,
            b",".join(forwarded).decode("latin-1") if forwarded else None,
        )
        user = self._verified_user(authorization) if authorization else None
        request = plan.request(user or f"ip:{ip}", ip)
        decision, source = await self._decide(scope, request)

        if decision.allowed:
            self._count(category, "allowed", source)
        elif plan.tier.shadow:
            self._count(category, "shadow_limited", source)
        else:
            self._count(category, "limited", source)
            await self._refuse(plan, decision)(scope, receive, send)
            return
        await self.app(scope, receive, self._with_headers(send, plan, decision))

    async def _decide(self, scope: Scope, request: DecisionRequest) -> tuple[Decision, str]:
        redis = self._given_redis or resources_of(scope["app"]).redis
        if redis.client is None:
            return self._local.decide(request, 1, now_us()), "local"
        now = now_us()
        cached = self._denials.check(request.cache_key, now)
        if cached is not None:
            return cached, "denial_cache"
        if redis.available:
            buckets = self._redis_buckets
            if buckets is None or buckets.service is not redis:
                buckets = RedisBuckets(
                    redis,
                    batch_max=self._settings.rate_limit_batch_max,
                    # Leave part of the pool to the cache and breakers sharing the client.
                    max_in_flight=max(1, self._settings.redis_pool_size // 2),
                )
                self._redis_buckets = buckets
            decision = await buckets.decide(request)
            if decision is not None:
                if self._in_fallback:
                    self._in_fallback = False
                    logger.warning("Rate limiter back on Redis (shared limits)")
                if not decision.allowed:
                    self._denials.remember(request.cache_key, now_us(), decision)
                return decision, "redis"
        if not self._in_fallback:
            self._in_fallback = True
            logger.warning(
                "Rate limiter on in-process buckets: 1/%d of each limit per process", self._share
            )
        return self._local.decide(request, self._share, now_us()), "fallback"

    def _verified_user(self, authorization: bytes) -> str | None:
        """The identity of a valid Bearer token's user; None for anything else (keyed by IP)."""
        if authorization[:7].lower() != _BEARER:
            return None
        token = authorization[7:].strip()
        cached = self._tokens.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        if self._jwt_key is None:
            self._jwt_key = self._settings.jwt_signing_key()
        try:
            claims = decode_access_token_with_key(self._jwt_key, token.decode("latin-1"))
        except InvalidToken:
            return None
        if len(self._tokens) >= _TOKEN_CACHE_MAX:
            self._tokens.clear()
        identity = f"u:{claims.user_id}"
        self._tokens[token] = (identity, claims.expires_at.timestamp())
        return identity

    def _count(self, category: str, outcome: str, source: str) -> None:
        key = (category, outcome, source)
        increment = self._counters.get(key)
        if increment is None:
            increment = self._counters[key] = RATE_LIMIT_DECISIONS.labels(*key).inc
        increment()

    @staticmethod
    def _headers(plan: _TierPlan, decision: Decision) -> list[tuple[bytes, bytes]]:
        remaining = str(max(0, decision.remaining)).encode()
        # Seconds until the bucket is full again; on a refusal, until the next token exists.
        if decision.allowed:
            reset = str(ceil_seconds(decision.reset_us)).encode()
        else:
            reset = str(max(1, ceil_seconds(decision.retry_after_us))).encode()
        return [
            (b"x-ratelimit-limit", plan.limit),
            (b"x-ratelimit-remaining", remaining),
            (b"x-ratelimit-reset", reset),
            (b"ratelimit-policy", plan.policy),
            (b"ratelimit", plan.name + b";r=" + remaining + b";t=" + reset),
        ]

    def _refuse(self, plan: _TierPlan, decision: Decision) -> Response:
        retry_after = max(1, ceil_seconds(decision.retry_after_us))
        response = error_response(
            429,
            "rate_limited",
            f"Too many requests. Retry in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
            category=plan.category,
        )
        response.raw_headers.extend(self._headers(plan, decision))
        return response

    def _with_headers(self, send: Send, plan: _TierPlan, decision: Decision) -> Send:
        headers = self._headers(plan, decision)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        return send_with_headers
