"""Tiers keyed by the client address only (key_by="ip", the auth tier by default): bearer tokens,
valid or not, never open a fresh bucket, in one process or across two."""

import asyncio
from pathlib import Path

import httpx
import pytest
import redis

from app.config.rate_limits import RateLimitTier
from tests.middleware.rate_limiter.helpers import (
    limiter_settings,
    make_token,
    running_app,
    server_env,
)
from tests.support.uvicorn_processes import UvicornProcesses

# One token an hour: nothing comes back during a test.
AUTH = RateLimitTier(capacity=5, refill=1, period_seconds=3600, key_by="ip")
REQUESTS = 12


def bearer(n: int) -> dict[str, str]:
    """A valid token of a different (throwaway) account for each n."""
    return {"Authorization": f"Bearer {make_token(str(1000 + n))}"}


async def test_valid_tokens_do_not_buy_auth_budget(redis_url: str, tmp_path: Path) -> None:
    settings = limiter_settings(tmp_path, redis_url=redis_url, tiers={"auth": AUTH})
    async with running_app(settings) as (_, client):
        codes = [
            (await client.post("/api/auth/login", headers=bearer(n))).status_code
            for n in range(REQUESTS)
        ]
    assert codes == [200] * 5 + [429] * (REQUESTS - 5)
    store = redis.Redis.from_url(redis_url)
    assert store.keys("rl:*") == [b"rl:{auth:ip:198.51.100.7}"]
    store.close()


async def test_key_by_ip_is_a_property_of_the_tier(redis_url: str, tmp_path: Path) -> None:
    read = RateLimitTier(capacity=2, refill=1, period_seconds=3600, key_by="ip")
    settings = limiter_settings(tmp_path, redis_url=redis_url, tiers={"read": read})
    async with running_app(settings) as (_, client):
        codes = [(await client.get("/api/jobs", headers=bearer(n))).status_code for n in range(4)]
    assert codes == [200, 200, 429, 429]


@pytest.mark.slow
async def test_valid_tokens_do_not_buy_auth_budget_across_processes(
    redis_url: str, tmp_path: Path
) -> None:
    env = server_env(tmp_path, redis_url, {"auth": AUTH}, RATE_LIMIT_EXPECTED_PROCESSES="1")
    servers = UvicornProcesses(
        "tests.middleware.rate_limiter.limiter_app:create_limiter_app", 2, env, factory=True
    )
    await asyncio.to_thread(servers.start)
    try:
        async with httpx.AsyncClient(timeout=30.0) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"{servers.urls[n % 2]}/api/auth/login", headers=bearer(n))
                    for n in range(REQUESTS)
                )
            )
    finally:
        await asyncio.to_thread(servers.stop)
    codes = [response.status_code for response in responses]
    assert codes.count(200) == 5
    assert codes.count(429) == REQUESTS - 5
    refused = next(response for response in responses if response.status_code == 429)
    assert refused.json()["error"]["category"] == "auth"
