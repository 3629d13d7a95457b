"""The engine without HTTP: RateLimiter decisions for any identity, through Redis or in-process."""

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from app.config import Settings
from app.config.rate_limits import DEFAULT_TIERS, RateLimitTier
from app.services.ratelimit.limiter import RateLimiter
from tests.support.redis_server import RedisServer
from tests.support.redis_service import patient_redis_settings, started_redis_service
from tests.support.wait import wait_until

# One token an hour: nothing comes back during a test.
TIERS = {**DEFAULT_TIERS, "auth": RateLimitTier(capacity=4, refill=1, period_seconds=3600)}
IP = "203.0.113.9"
LIMITER_LOGGER = "app.services.ratelimit.limiter"


def engine_settings(tmp_path: Path, redis_url: str | None, **overrides: Any) -> Settings:
    """The test tiers on patient Redis settings (a timed-out call would fall back in-process and
    change the counts)."""
    return patient_redis_settings(tmp_path, redis_url, **{"rate_limit_tiers": TIERS, **overrides})


@asynccontextmanager
async def started_limiter(settings: Settings) -> AsyncIterator[RateLimiter]:
    async with started_redis_service(settings, "rate-limit-engine-test") as redis_service:
        yield RateLimiter(settings, redis_service)


async def admitted(limiter: RateLimiter, identity: str, attempts: int) -> list[bool]:
    return [(await limiter.decide("auth", identity, IP)).allowed for _ in range(attempts)]


async def test_any_identity_is_limited_through_redis(redis_url: str, tmp_path: Path) -> None:
    async with started_limiter(engine_settings(tmp_path, redis_url)) as limiter:
        by_email = await admitted(limiter, "email:ada@example.com", 6)
        by_account = await admitted(limiter, "account:17", 1)
        refused = await limiter.decide("auth", "email:ada@example.com", IP)
    assert by_email == [True] * 4 + [False] * 2
    assert by_account == [True]
    assert refused.remaining == 0
    assert refused.retry_after_us > 0
    store = redis.Redis.from_url(redis_url)
    assert sorted(store.keys("rl:*")) == [
        b"rl:{auth:account:17}",
        b"rl:{auth:email:ada@example.com}",
    ]
    store.close()


async def test_without_redis_url_the_limit_is_in_process_and_full(tmp_path: Path) -> None:
    settings = engine_settings(tmp_path, None, rate_limit_expected_processes=4)
    async with started_limiter(settings) as limiter:
        assert await admitted(limiter, "email:ada@example.com", 6) == [True] * 4 + [False] * 2


async def test_outage_falls_back_to_a_share_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer()
    server.start()
    settings = engine_settings(tmp_path, server.url, rate_limit_expected_processes=2)
    try:
        with caplog.at_level(logging.WARNING, logger=LIMITER_LOGGER):
            async with started_limiter(settings) as limiter:
                assert await admitted(limiter, "account:1", 5) == [True] * 4 + [False]
                server.stop()
                # This process's share of the tier: 4 / 2 processes, per identity.
                assert await admitted(limiter, "account:2", 4) == [True] * 2 + [False] * 2
                assert await admitted(limiter, "account:3", 4) == [True] * 2 + [False] * 2
                server.start()
                store = redis.Redis.from_url(server.url)
                probes = (f"account:probe-{n}" for n in itertools.count())

                async def back_on_redis() -> bool:
                    identity = next(probes)
                    await limiter.decide("auth", identity, IP)
                    return bool(store.exists(f"rl:{{auth:{identity}}}"))

                await wait_until(
                    back_on_redis,
                    within=settings.redis_backoff_max_seconds,
                    what="the limiter to return to Redis",
                )
                # Shared limits resume: a new identity gets the full tier from Redis.
                assert await admitted(limiter, "account:4", 5) == [True] * 4 + [False]
                store.close()
    finally:
        server.cleanup()
    # Each switch is logged once, however many decisions it served.
    messages = [
        r.getMessage() for r in caplog.records if r.name == "app.services.ratelimit.limiter"
    ]
    assert messages == [
        "Rate limiter on in-process buckets: 1/2 of each limit per process",
        "Rate limiter back on Redis (shared limits)",
    ]
