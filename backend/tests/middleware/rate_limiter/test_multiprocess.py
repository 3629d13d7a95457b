"""Exactness across OS processes: 4 uvicorn servers share one bucket through Redis.

300 concurrent requests for one key (capacity 100, one token an hour) spread over the 4
processes: exactly 100 are admitted, whatever the Redis topology. The processes are told to
expect 1 process, so a silent fallback to in-process buckets would admit up to 300, and the
bucket must be found empty in Redis afterwards.
"""

import asyncio
from pathlib import Path

import httpx
import pytest
import redis
import redis.cluster

from app.config.rate_limits import RateLimitTier
from tests.middleware.rate_limiter.helpers import server_env
from tests.support.redis_topologies import RedisClusterNodes, RedisSentinelSetup
from tests.support.uvicorn_processes import UvicornProcesses

PROCESSES = 4
REQUESTS = 300
CAPACITY = 100
TIERS = {"read": RateLimitTier(capacity=CAPACITY, refill=1, period_seconds=3600)}
KEY = "rl:{read:ip:127.0.0.1}"
HOUR_US = 3600 * 10**6


async def fire(ports: list[int]) -> list[int]:
    limits = httpx.Limits(max_connections=REQUESTS)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        responses = await asyncio.gather(
            *(
                client.get(f"http://127.0.0.1:{ports[i % len(ports)]}/api/jobs")
                for i in range(REQUESTS)
            )
        )
    return [response.status_code for response in responses]


async def run_exactness(
    env: dict[str, str], store: redis.Redis | redis.cluster.RedisCluster
) -> None:
    servers = UvicornProcesses(
        "tests.middleware.rate_limiter.limiter_app:create_limiter_app",
        PROCESSES,
        {**env, "RATE_LIMIT_EXPECTED_PROCESSES": "1"},
        factory=True,
    )
    await asyncio.to_thread(servers.start)
    try:
        codes = await fire(servers.ports)
    finally:
        await asyncio.to_thread(servers.stop)
    assert codes.count(200) == CAPACITY
    assert codes.count(429) == REQUESTS - CAPACITY
    level = store.hget(KEY, "l")
    store.close()
    assert level is not None and int(level) < HOUR_US  # emptied in Redis: less than one token


@pytest.mark.slow
async def test_exact_across_processes_on_standalone_redis(redis_url: str, tmp_path: Path) -> None:
    await run_exactness(server_env(tmp_path, redis_url, TIERS), redis.Redis.from_url(redis_url))


@pytest.mark.slow
async def test_exact_across_processes_on_redis_cluster(
    redis_cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    await run_exactness(
        server_env(tmp_path, redis_cluster.url, TIERS, REDIS_MODE="cluster"),
        redis.cluster.RedisCluster.from_url(redis_cluster.url),
    )


@pytest.mark.slow
async def test_exact_across_processes_through_sentinel(
    redis_sentinel: RedisSentinelSetup, tmp_path: Path
) -> None:
    env = server_env(
        tmp_path,
        redis_sentinel.url,
        TIERS,
        REDIS_MODE="sentinel",
        REDIS_SENTINEL_HOSTS=redis_sentinel.sentinel_hosts,
    )
    await run_exactness(env, redis.Redis(port=redis_sentinel.master.port))
