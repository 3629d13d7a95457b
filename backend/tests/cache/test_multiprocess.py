"""Two uvicorn processes sharing one Postgres database and one private Redis."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI

from app.config import Settings
from app.services.cache import Cache
from app.services.redis import RedisService
from tests.cache.stampede_app import STAMPEDE, STAMPEDE_COUNTER, STAMPEDE_KEY
from tests.conftest import TEST_JWT_SECRET
from tests.support.factories import admin_token, auth, create_job
from tests.support.uvicorn_processes import UvicornProcesses

pytestmark = pytest.mark.slow

REQUESTS = 200


def _env(tmp_path: Path, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATA_DIR": str(tmp_path / "server-data"),
        "REDIS_URL": redis_url,
        "CACHE_ENABLED": "true",
        "RATE_LIMIT_ENABLED": "false",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        **extra,
    }


async def test_no_client_sees_the_old_listing_after_an_admin_edit(
    tmp_path: Path, app: FastAPI, client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    job = await create_job(app, title="title-0")
    admin = auth(await admin_token(app, client))
    # As in the stampede test: on a loaded machine a 0.25 s read timeout would count Redis as
    # down; this test is about ordering invalidations and reads while Redis is up.
    env = _env(tmp_path, redis_url, DATABASE_URL=database_url, REDIS_SOCKET_TIMEOUT_SECONDS="5")
    with UvicornProcesses("app.main:app", 2, env) as servers:
        async with httpx.AsyncClient(timeout=10) as http:
            first, second = servers.urls
            observations: list[tuple[float, str]] = []
            stop = asyncio.Event()

            async def keep_reading(url: str) -> None:
                # Reads that start after a write's response must all see that write.
                while not stop.is_set():
                    started = time.monotonic()
                    response = await http.get(f"{url}/api/jobs")
                    assert response.status_code == 200
                    observations.append((started, response.json()["items"][0]["title"]))

            readers = [asyncio.create_task(keep_reading(url)) for url in (first, second, second)]
            writes: list[tuple[float, str]] = []
            for round_number in range(1, 7):
                writer = (first, second)[round_number % 2]
                title = f"title-{round_number}"
                edited = await http.patch(
                    f"{writer}/api/admin/jobs/{job.id}", headers=admin, json={"title": title}
                )
                assert edited.status_code == 200
                writes.append((time.monotonic(), title))
                for url in (first, second):
                    assert (await http.get(f"{url}/api/jobs")).json()["items"][0]["title"] == title
                    assert (await http.get(f"{url}/api/jobs/{job.id}")).json()["title"] == title
                await asyncio.sleep(0.05)  # let the readers overlap the next write
            stop.set()
            await asyncio.gather(*readers)

    assert len(observations) > 20
    for started, seen in observations:
        latest = [title for written_at, title in writes if written_at <= started]
        if latest:
            assert int(seen.split("-")[1]) >= int(latest[-1].split("-")[1]), (
                started,
                seen,
                latest[-1],
            )


async def _wait_until(condition: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("expiry", ["expired", "stale"])
async def test_one_recomputation_for_a_hot_key_across_two_processes(
    tmp_path: Path, redis_url: str, expiry: str
) -> None:
    """200 concurrent requests for one expired (or stale) key: exactly one recomputation.

    "expired": a 60 s entry is made to expire now (PEXPIRE), so the refilled entry outlives the
    burst. "stale": a 6 s entry passes its fresh TTL and stays servable while one caller
    refreshes; 6 s outlasts the burst even on a loaded machine.
    """
    ttl, stale_ratio = ("60", "0") if expiry == "expired" else ("6", "50")
    env = _env(
        tmp_path,
        redis_url,
        CACHE_TTL_SECONDS=f'{{"default": {ttl}}}',
        CACHE_STALE_RATIO=stale_ratio,
        CACHE_TTL_JITTER="0",
        # On a loaded test machine a 0.25 s read timeout would count Redis as down (then the
        # process bypasses the cache by design); this test is about the lock, not faults.
        REDIS_SOCKET_TIMEOUT_SECONDS="5",
    )
    settings = Settings(jwt_secret=TEST_JWT_SECRET, redis_url=redis_url)
    entry_key = Cache(settings, RedisService(settings)).entry_key(STAMPEDE, STAMPEDE_KEY)
    store = redis.asyncio.Redis.from_url(redis_url)
    with UvicornProcesses(
        "tests.cache.stampede_app:create_stampede_app", 2, env, factory=True
    ) as servers:
        limits = httpx.Limits(max_connections=REQUESTS)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            assert (await http.get(f"{servers.urls[0]}/value")).json() == {"computation": 1}

            if expiry == "expired":
                await store.pexpire(entry_key, 1)

                async def gone() -> bool:
                    return await store.exists(entry_key) == 0

                await _wait_until(gone)
            else:
                fresh_until = int(cast(bytes, await store.get(entry_key)).split(b"|")[1])

                async def past_fresh() -> bool:
                    seconds, micros = await store.time()
                    return seconds * 1000 + micros // 1000 > fresh_until

                await _wait_until(past_fresh)

            responses = await asyncio.gather(
                *(http.get(f"{servers.urls[index % 2]}/value") for index in range(REQUESTS))
            )
    computations = int(await store.get(STAMPEDE_COUNTER) or 0)
    await store.aclose()

    assert [response.status_code for response in responses] == [200] * REQUESTS
    assert computations == 2  # the first fill, then exactly one recomputation
    served = {response.json()["computation"] for response in responses}
    assert served == ({2} if expiry == "expired" else {1, 2})
