"""The lease engine without HTTP: ConcurrencyLimiter against a real Redis, and in-process."""

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from app.config import Settings
from app.services.ratelimit.concurrency import (
    ACQUIRE_LEASES_LUA,
    RELEASE_LEASES_LUA,
    Admission,
    ConcurrencyLimiter,
    Lease,
)
from tests.support.redis_server import RedisServer
from tests.support.redis_service import patient_redis_settings, started_redis_service
from tests.support.wait import wait_until

LIMITER_LOGGER = "app.services.ratelimit.concurrency"
TTL_SECONDS = 60


def lease_settings(tmp_path: Path, redis_url: str | None, **overrides: Any) -> Settings:
    """Patient Redis settings (a timed-out call would fall back in-process and change counts)."""
    values: dict[str, Any] = {"concurrency_lease_ttl_seconds": TTL_SECONDS, **overrides}
    return patient_redis_settings(tmp_path, redis_url, **values)


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the tests' Redis, to look at the leases the limiter wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@asynccontextmanager
async def started_limiter(settings: Settings) -> AsyncIterator[ConcurrencyLimiter]:
    """A ConcurrencyLimiter on a started RedisService, closed on exit."""
    async with started_redis_service(settings, "lease-test") as service:
        yield ConcurrencyLimiter(settings, service)


def server_ms(store: redis.Redis) -> int:
    seconds, microseconds = store.time()
    return seconds * 1000 + microseconds // 1000


async def leases(limiter: ConcurrencyLimiter, identity: str, limit: int, n: int) -> list[Lease]:
    """Acquire `n` times; the leases granted (refusals are dropped)."""
    granted = [(await limiter.acquire(identity, limit)).lease for _ in range(n)]
    return [lease for lease in granted if lease is not None]


async def released(store: redis.Redis, key: str, held: int) -> None:
    """Wait until `key` holds `held` leases (releases are sent on a later loop turn)."""

    async def settled() -> bool:
        return store.zcard(key) == held

    await wait_until(settled, within=1, what=f"{key} to hold {held} leases")


async def test_admits_up_to_the_limit_and_a_release_frees_a_slot(
    redis_url: str, tmp_path: Path, store: redis.Redis
) -> None:
    async with started_limiter(lease_settings(tmp_path, redis_url)) as limiter:
        held = await leases(limiter, "u:1", 3, 5)
        assert len(held) == 3
        assert all(lease.source == "redis" for lease in held)
        assert len({lease.lease_id for lease in held}) == 3
        assert store.zcard("cl:{u:1}") == 3
        refused = await limiter.acquire("u:1", 3)
        assert refused == Admission(None, "redis")
        # Another identity has its own slots.
        assert len(await leases(limiter, "ip:203.0.113.9", 3, 1)) == 1

        limiter.release(held[0])
        await released(store, "cl:{u:1}", 2)
        assert len(await leases(limiter, "u:1", 3, 2)) == 1
        for lease in held[1:]:
            limiter.release(lease)
        await released(store, "cl:{u:1}", 1)


async def test_expiry_is_server_time_plus_the_ttl_and_the_key_expires_with_its_newest_lease(
    redis_url: str, tmp_path: Path, store: redis.Redis
) -> None:
    settings = lease_settings(tmp_path, redis_url)
    async with started_limiter(settings) as limiter:
        before = server_ms(store)
        [lease] = await leases(limiter, "u:2", 5, 1)
        after = server_ms(store)
        expiry = store.zscore("cl:{u:2}", lease.lease_id)
        assert expiry is not None
        assert before + TTL_SECONDS * 1000 <= expiry <= after + TTL_SECONDS * 1000
        assert store.pexpiretime("cl:{u:2}") == expiry

        # A lease from a process with a longer TTL outlives the next one: the key keeps its
        # expiry, so it is not dropped under the longer lease.
        longer = after + 10 * TTL_SECONDS * 1000
        store.zadd("cl:{u:2}", {"other-process:1": longer})
        await leases(limiter, "u:2", 5, 1)
        assert store.pexpiretime("cl:{u:2}") == longer


async def test_the_script_removes_expired_leases_before_counting(
    redis_url: str, tmp_path: Path, store: redis.Redis
) -> None:
    settings = lease_settings(tmp_path, redis_url)
    async with started_limiter(settings) as limiter:
        now = server_ms(store)
        # Two lost releases (expired) and one live lease from other processes fill the limit.
        store.zadd("cl:{u:3}", {"lost:1": now - 5000, "lost:2": now - 1, "live:1": now + 60_000})
        admitted = await limiter.acquire("u:3", 3)
        assert admitted.lease is not None
        members = set(store.zrange("cl:{u:3}", 0, -1))
        assert members == {b"live:1", admitted.lease.lease_id.encode()}
        # Only the live ones count: one more fits, then the limit holds.
        assert (await limiter.acquire("u:3", 3)).lease is not None
        assert (await limiter.acquire("u:3", 3)).lease is None


async def test_refusals_change_nothing_and_an_identity_without_leases_leaves_no_key(
    redis_url: str, tmp_path: Path, store: redis.Redis
) -> None:
    settings = lease_settings(tmp_path, redis_url)
    async with started_limiter(settings) as limiter:
        [lease] = await leases(limiter, "u:4", 1, 1)
        expiry = store.pexpiretime("cl:{u:4}")
        assert (await limiter.acquire("u:4", 1)).lease is None
        assert store.zrange("cl:{u:4}", 0, -1) == [lease.lease_id.encode()]
        assert store.pexpiretime("cl:{u:4}") == expiry
        limiter.release(lease)
        await released(store, "cl:{u:4}", 0)
        assert store.exists("cl:{u:4}") == 0


async def test_the_scripts_alone_decide_in_order_and_release(store: redis.Redis) -> None:
    """The scripts as Redis runs them, from any client: one call decides several acquisitions in
    order (an identity may repeat), and one call ends several leases."""
    store.zadd("cl:{x}", {"expired": 1})
    keys = ["cl:{x}", "cl:{y}", "cl:{x}", "cl:{x}"]
    args: list[int | str] = [30_000, 2, "x1", 5, "y1", 2, "x2", 2, "x3"]
    assert store.eval(ACQUIRE_LEASES_LUA, len(keys), *keys, *args) == [1, 1, 1, 0]
    assert store.zrange("cl:{x}", 0, -1) == [b"x1", b"x2"]
    assert 0 < store.pttl("cl:{x}") <= 30_000
    released = store.eval(RELEASE_LEASES_LUA, 3, "cl:{x}", "cl:{y}", "cl:{x}", "x1", "y1", "gone")
    assert released == 2
    assert store.zrange("cl:{x}", 0, -1) == [b"x2"]
    assert store.exists("cl:{y}") == 0


async def test_acquisitions_of_one_loop_turn_share_one_script_call(
    redis_url: str, tmp_path: Path, store: redis.Redis
) -> None:
    settings = lease_settings(tmp_path, redis_url)
    async with started_limiter(settings) as limiter:
        await limiter.acquire("u:warm-up", 1)  # loads the script
        store.config_resetstat()
        admissions = await asyncio.gather(
            *(limiter.acquire(f"u:batch-{n % 10}", 3) for n in range(40))
        )
        stats = store.info("commandstats")
    assert sum(admission.lease is not None for admission in admissions) == 30
    assert stats["cmdstat_evalsha"]["calls"] == 1


async def test_two_limiters_on_one_redis_share_the_limit_exactly(
    redis_url: str, tmp_path: Path
) -> None:
    settings = lease_settings(tmp_path, redis_url)
    async with (
        started_redis_service(settings, "lease-test-a") as first,
        started_redis_service(settings, "lease-test-b") as second,
    ):
        limiters = [ConcurrencyLimiter(settings, first), ConcurrencyLimiter(settings, second)]
        admissions = await asyncio.gather(*(limiters[n % 2].acquire("u:5", 7) for n in range(40)))
    assert sum(admission.lease is not None for admission in admissions) == 7
    assert {admission.source for admission in admissions} == {"redis"}


async def test_a_cancelled_acquire_leaves_no_lease(
    redis_url: str, tmp_path: Path, store: redis.Redis
) -> None:
    """Cancelled at every point of its round trip, an acquisition never leaves a lease behind
    (one whose script ran is released by the limiter)."""
    settings = lease_settings(tmp_path, redis_url)
    async with started_limiter(settings) as limiter:
        for steps in range(20):
            task = asyncio.create_task(limiter.acquire("u:6", 100))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            try:
                admission = await task
            except asyncio.CancelledError:
                continue
            assert admission.lease is not None  # finished before the cancel: release it
            limiter.release(admission.lease)

        async def no_leases() -> bool:
            return store.exists("cl:{u:6}") == 0

        await wait_until(no_leases, within=1, what="the cancelled acquisitions' leases to go")


async def test_without_redis_url_the_limit_is_in_process_and_full(tmp_path: Path) -> None:
    settings = lease_settings(tmp_path, None, rate_limit_expected_processes=4)
    async with started_limiter(settings) as limiter:
        held = await leases(limiter, "u:7", 4, 6)
        assert [lease.source for lease in held] == ["local"] * 4
        assert (await limiter.acquire("u:7", 4)) == Admission(None, "local")
        limiter.release(held[0])
        assert len(await leases(limiter, "u:7", 4, 2)) == 1


async def test_outage_falls_back_to_a_share_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer()
    server.start()
    settings = lease_settings(tmp_path, server.url, rate_limit_expected_processes=3)
    try:
        with caplog.at_level(logging.WARNING, logger=LIMITER_LOGGER):
            async with started_limiter(settings) as limiter:
                in_redis = await leases(limiter, "u:8", 10, 1)
                server.stop()
                # This process's share: 10 / 3 processes, rounded up.
                fallback = await leases(limiter, "u:9", 10, 6)
                assert [lease.source for lease in fallback] == ["fallback"] * 4
                # Releasing works whichever side the lease came from, Redis down or not.
                limiter.release(in_redis[0])
                limiter.release(fallback[0])
                assert len(await leases(limiter, "u:9", 10, 2)) == 1

                server.start()
                store = redis.Redis.from_url(server.url)
                probes = (f"u:probe-{n}" for n in itertools.count())

                async def back_on_redis() -> bool:
                    admission = await limiter.acquire(next(probes), 10)
                    return admission.source == "redis"

                await wait_until(
                    back_on_redis,
                    within=settings.redis_backoff_max_seconds,
                    what="the limiter to return to Redis",
                )
                # Fleet-wide leases resume: a new identity gets the full limit from Redis.
                assert len(await leases(limiter, "u:10", 10, 12)) == 10
                assert store.zcard("cl:{u:10}") == 10
                store.close()
    finally:
        server.cleanup()
    messages = [r.getMessage() for r in caplog.records if r.name == LIMITER_LOGGER]
    assert messages == [
        "Concurrency limit on in-process counts: 1/3 of each limit per process",
        "Concurrency limit back on Redis (fleet-wide leases)",
    ]
