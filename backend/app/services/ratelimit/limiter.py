"""The rate-limit engine: one token-bucket decision per request, for any caller, without HTTP.

A decision takes one token from each of a category's buckets (the identity's own, plus the tier's
optional per-IP and global buckets), all or nothing, in Redis with one atomic script.

Redis modes: no REDIS_URL -> in-process buckets at the full limit (a single dev process); Redis
configured but down -> in-process buckets at 1/RATE_LIMIT_EXPECTED_PROCESSES of each tier until
the RedisService back-off ends, then back to Redis by itself. Each switch is logged once.
"""

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter

from app.config import Settings
from app.config.rate_limits import RateLimitTier
from app.services.ratelimit.buckets import (
    BucketSpecs,
    Decision,
    DecisionRequest,
    DenialCache,
    RedisBuckets,
)
from app.services.ratelimit.local_buckets import LocalBuckets
from app.services.redis import RedisService

logger = logging.getLogger(__name__)

RATE_LIMIT_DECISIONS = Counter(
    "hiringpro_rate_limit_decisions_total",
    "Rate-limit decisions by category, outcome (allowed, limited, shadow_limited) and source "
    "(redis, denial_cache, local = no Redis configured, fallback = Redis down).",
    ["category", "outcome", "source"],
)


class TierPlan:
    """A category's precomputed bucket specs and key layout."""

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

    def request(self, identity: str, ip: str) -> DecisionRequest:
        """The buckets `identity` (calling from `ip`) draws from in this category."""
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


class RateLimiter:
    """Decisions for the tiers of RATE_LIMIT_TIERS, shared through `redis` (one per process).

    Keeps what makes a decision cheap: the tier plans, one batching Redis runner, the denial
    cache (refused clients cost no round trip until their retry time) and the metric's children.
    """

    def __init__(self, settings: Settings, redis: RedisService) -> None:
        self.redis = redis
        tiers = settings.rate_limit_tiers
        self._plans = {name: TierPlan(name, tier) for name, tier in tiers.items()}
        self._share = settings.rate_limit_expected_processes
        self._batch_max = settings.rate_limit_batch_max
        # Leave part of the pool to the cache and breakers sharing the client.
        self._max_in_flight = max(1, settings.redis_pool_size // 2)
        self._redis_buckets: RedisBuckets | None = None
        self._local = LocalBuckets(settings.rate_limit_local_max_keys)
        self._denials = DenialCache(settings.rate_limit_local_max_keys)
        self._in_fallback = False
        self._counters: dict[tuple[str, str, str], Callable[[], None]] = {}

    async def decide(self, category: str, identity: str, ip: str) -> Decision:
        """Take one token for `identity`, calling from `ip`, from the `category` tier's buckets.

        Never raises for Redis trouble (it falls back in-process). A refusal by a shadow tier
        (`RateLimitTier.shadow`) is counted as such and the caller admits the request anyway.
        """
        plan = self._plans[category]
        request = plan.request(identity, ip)
        redis = self.redis
        if redis.client is None:
            return self._counted(plan, self._local.decide(request, 1, _now_us()), "local")
        cached = self._denials.check(request.cache_key, _now_us())
        if cached is not None:
            return self._counted(plan, cached, "denial_cache")
        if redis.available:
            buckets = self._redis_buckets
            if buckets is None:
                # Built on first use: the client (and whether it is a Cluster) exists only once
                # the RedisService has started.
                buckets = self._redis_buckets = RedisBuckets(
                    redis, batch_max=self._batch_max, max_in_flight=self._max_in_flight
                )
            decision = await buckets.decide(request)
            if decision is not None:
                if self._in_fallback:
                    self._in_fallback = False
                    logger.warning("Rate limiter back on Redis (shared limits)")
                if not decision.allowed:
                    self._denials.remember(request.cache_key, _now_us(), decision)
                return self._counted(plan, decision, "redis")
        if not self._in_fallback:
            self._in_fallback = True
            logger.warning(
                "Rate limiter on in-process buckets: 1/%d of each limit per process", self._share
            )
        return self._counted(plan, self._local.decide(request, self._share, _now_us()), "fallback")

    def _counted(self, plan: TierPlan, decision: Decision, source: str) -> Decision:
        if decision.allowed:
            outcome = "allowed"
        elif plan.tier.shadow:
            outcome = "shadow_limited"
        else:
            outcome = "limited"
        key = (plan.category, outcome, source)
        increment = self._counters.get(key)
        if increment is None:
            increment = self._counters[key] = RATE_LIMIT_DECISIONS.labels(*key).inc
        increment()
        return decision


def _now_us() -> int:
    """Monotonic microseconds: the clock of the in-process buckets and the denial cache."""
    return time.monotonic_ns() // 1000
