"""Two uvicorn processes sharing one Postgres database and one private Redis."""

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI

from app.config import Settings
from app.services.cache import Cache
from app.services.redis import RedisService
from tests.conftest import TEST_JWT_SECRET
from tests.services.cache.helpers import end_freshness, patient_server_env
from tests.services.cache.stampede_app import (
    STAMPEDE,
    STAMPEDE_COUNTER,
    STAMPEDE_HOLD,
    STAMPEDE_KEY,
)
from tests.support.factories import admin_token, auth, create_job
from tests.support.uvicorn_processes import UvicornProcesses
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

REQUESTS = 200
# Per request, as the httpx clients below are configured.
REQUEST_TIMEOUT_SECONDS = 30.0


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
        # With the production 0.25 s timeouts one stall on a loaded machine would send a process
        # to its bypass path (by design): these tests are about ordering and counts, not faults.
        **patient_server_env(),
        **extra,
    }


async def test_no_client_sees_the_old_listing_after_an_admin_edit(
    tmp_path: Path, app: FastAPI, client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    job = await create_job(app, title="title-0")
    admin = auth(await admin_token(app, client))
    env = _env(tmp_path, redis_url, DATABASE_URL=database_url)
    with UvicornProcesses("app.main:app", 2, env) as servers:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as http:
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

            async def read_since_the_last_write() -> bool:
                last_write = writes[-1][0]
                return sum(started >= last_write for started, _ in observations) >= 2 * len(readers)

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
                # Paced by the readers, not by a sleep: reads overlap every write.
                await wait_until(
                    read_since_the_last_write,
                    within=2 * REQUEST_TIMEOUT_SECONDS,
                    what="two reads per reader started after the write",
                )
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


@pytest.mark.parametrize("expiry", ["expired", "stale"])
async def test_one_recomputation_for_a_hot_key_across_two_processes(
    tmp_path: Path, redis_url: str, expiry: str
) -> None:
    """200 concurrent requests for one expired (or stale) key: exactly one recomputation.

    The entry lives 60 s, far longer than the burst. "expired": it is made to expire now
    (PEXPIRE). "stale": its fresh TTL is ended now and it stays servable while one caller
    refreshes; the refresh is held until a stale response has been served, so both kinds of
    answer are seen however the processes are scheduled.
    """
    stale_ratio = "0" if expiry == "expired" else "1"
    env = _env(
        tmp_path,
        redis_url,
        CACHE_TTL_SECONDS='{"default": 60}',
        CACHE_STALE_RATIO=stale_ratio,
        CACHE_TTL_JITTER="0",
    )
    settings = Settings(jwt_secret=TEST_JWT_SECRET, redis_url=redis_url)
    entry_key = Cache(settings, RedisService(settings)).entry_key(STAMPEDE, STAMPEDE_KEY)
    store = redis.asyncio.Redis.from_url(redis_url)
    with UvicornProcesses(
        "tests.services.cache.stampede_app:create_stampede_app", 2, env, factory=True
    ) as servers:
        limits = httpx.Limits(max_connections=REQUESTS)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS, limits=limits) as http:
            assert (await http.get(f"{servers.urls[0]}/value")).json() == {"computation": 1}

            if expiry == "expired":
                expire_ms = 1
                await store.pexpire(entry_key, expire_ms)

                async def gone() -> bool:
                    return await store.exists(entry_key) == 0

                await wait_until(gone, within=expire_ms / 1000, what="the entry to expire")
            else:
                await end_freshness(store, entry_key)
                await store.set(STAMPEDE_HOLD, 1)

            requests = [
                asyncio.create_task(http.get(f"{servers.urls[index % 2]}/value"))
                for index in range(REQUESTS)
            ]
            if expiry == "stale":

                async def stale_served() -> bool:
                    return any(
                        request.done() and request.result().json() == {"computation": 1}
                        for request in requests
                    )

                await wait_until(
                    stale_served,
                    within=REQUEST_TIMEOUT_SECONDS,
                    what="a stale answer while the refresh is held",
                )
                await store.delete(STAMPEDE_HOLD)
            responses = await asyncio.gather(*requests)
    computations = int(await store.get(STAMPEDE_COUNTER) or 0)
    await store.aclose()

    assert [response.status_code for response in responses] == [200] * REQUESTS
    assert computations == 2  # the first fill, then exactly one recomputation
    served = {response.json()["computation"] for response in responses}
    assert served == ({2} if expiry == "expired" else {1, 2})
