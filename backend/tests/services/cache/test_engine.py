"""The Cache against a real Redis: hits, None, models, tags, races, single-flight, SWR, faults."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio
from prometheus_client import REGISTRY
from pydantic import BaseModel

from app.services.cache import Cache, Namespace, cached, make_key
from app.services.redis import RedisService
from tests.services.cache.helpers import PATIENT_LOCK_TTL_SECONDS, cache_settings, end_freshness
from tests.support.redis_server import RedisServer
from tests.support.wait import LOADED_MACHINE_MARGIN, wait_until

PLAIN = Namespace("test_plain")
TAGGED = Namespace("test_tagged", tags=("test_tag",))
TAGGED_TOO = Namespace("test_tagged_too", tags=("test_tag", "test_other"))
SLOW = Namespace("test_slow", tags=("test_slow_tag",))
FLEETING = Namespace("test_fleeting")
PER_USER = Namespace("test_per_user", per_user=True)
DECORATED = Namespace("test_decorated")


class Calls:
    """A compute function that counts its calls and returns the count."""

    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        self.delay = delay

    async def __call__(self) -> dict[str, int]:
        self.count += 1
        value = {"call": self.count}
        if self.delay:
            await asyncio.sleep(self.delay)
        return value


class Profile(BaseModel):
    name: str
    skills: list[str]


def sample(name: str, namespace: Namespace) -> float:
    value = REGISTRY.get_sample_value(name, {"namespace": namespace.name})
    return value or 0.0


async def test_miss_then_hit_computes_once(cache: Cache, redis_url: str) -> None:
    calls = Calls()
    first = await cache.get_or_compute(PLAIN, "k", calls)
    second = await cache.get_or_compute(PLAIN, "k", calls)
    assert first == second == {"call": 1}
    assert calls.count == 1
    client = redis.asyncio.Redis.from_url(redis_url)
    assert await client.exists(cache.entry_key(PLAIN, "k")) == 1
    assert await client.pttl(cache.entry_key(PLAIN, "k")) > 0
    await client.aclose()


async def test_cached_none_is_a_hit_not_a_miss(cache: Cache) -> None:
    calls = 0

    async def nothing() -> None:
        nonlocal calls
        calls += 1

    assert await cache.get_or_compute(PLAIN, "none", nothing) is None
    assert await cache.get_or_compute(PLAIN, "none", nothing) is None
    assert calls == 1


async def test_pydantic_models_round_trip(cache: Cache) -> None:
    async def compute() -> Profile:
        return Profile(name="Ada", skills=["python"])

    assert await cache.get_or_compute(PLAIN, "model", compute) == {
        "name": "Ada",
        "skills": ["python"],
    }
    model = await cache.get_model(PLAIN, "model", Profile, compute)
    assert model == Profile(name="Ada", skills=["python"])


async def test_keys_are_namespaced_and_versioned(tmp_path: Path, redis_url: str) -> None:
    service = RedisService(cache_settings(tmp_path, redis_url))
    await service.start()
    old = Cache(cache_settings(tmp_path, redis_url, app_version="1.0.0"), service)
    new = Cache(cache_settings(tmp_path, redis_url, app_version="1.1.0"), service)
    old_calls, new_calls = Calls(), Calls()
    await old.get_or_compute(PLAIN, "shape", old_calls)
    await new.get_or_compute(PLAIN, "shape", new_calls)
    await old.get_or_compute(PLAIN, "shape", old_calls)
    assert (old_calls.count, new_calls.count) == (1, 1)
    assert old.entry_key(PLAIN, "shape") != new.entry_key(PLAIN, "shape")
    assert "{test_plain}" in old.entry_key(PLAIN, "shape")  # one Cluster slot per namespace
    await service.close()


async def test_tag_invalidation_hides_every_entry_of_the_tag(cache: Cache, redis_url: str) -> None:
    calls = Calls()
    for index in range(50):
        await cache.get_or_compute(TAGGED, str(index), calls)
    await cache.get_or_compute(TAGGED_TOO, "x", calls)
    await cache.get_or_compute(PLAIN, "untagged", calls)
    assert calls.count == 52
    client = redis.asyncio.Redis.from_url(redis_url)
    keys_before = await client.dbsize()

    await cache.invalidate("test_tag")

    # O(1): no entry was touched, one generation per namespace moved.
    assert await client.dbsize() == keys_before
    await client.aclose()
    for index in range(50):
        assert await cache.get_or_compute(TAGGED, str(index), calls) == {"call": 53 + index}
    assert await cache.get_or_compute(TAGGED_TOO, "x", calls) == {"call": 103}
    assert await cache.get_or_compute(PLAIN, "untagged", calls) == {"call": 52}


async def test_value_computed_from_old_data_never_becomes_readable(cache: Cache) -> None:
    """A writer commits and invalidates while a reader is computing from the old data."""
    data = {"title": "old"}

    async def compute_while_writer_commits() -> dict[str, str]:
        snapshot = dict(data)  # the reader's query sees the old row...
        data["title"] = "new"  # ...then the writer commits...
        await cache.invalidate("test_tag")  # ...and invalidates, before the reader stores
        return snapshot

    async def compute_now() -> dict[str, str]:
        return dict(data)

    assert await cache.get_or_compute(TAGGED, "race", compute_while_writer_commits) == {
        "title": "old"
    }
    assert await cache.get_or_compute(TAGGED, "race", compute_now) == {"title": "new"}


async def test_concurrent_callers_in_one_process_share_one_computation(cache: Cache) -> None:
    calls = Calls(delay=0.05)
    results = await asyncio.gather(*(cache.get_or_compute(SLOW, "hot", calls) for _ in range(100)))
    assert calls.count == 1
    assert all(result == {"call": 1} for result in results)


async def test_waiters_in_another_process_wait_for_the_lock_holder(
    tmp_path: Path, redis_url: str, cache: Cache
) -> None:
    """Two Cache instances (separate flights, as two processes have) recompute a key once."""
    other_service = RedisService(cache_settings(tmp_path, redis_url))
    await other_service.start()
    other = Cache(cache_settings(tmp_path, redis_url), other_service)
    calls = Calls(delay=0.2)
    results = await asyncio.gather(
        *(instance.get_or_compute(SLOW, "shared", calls) for instance in [cache, other] * 30)
    )
    assert calls.count == 1
    assert all(result == {"call": 1} for result in results)
    await other_service.close()


async def test_failed_computation_releases_the_lock_and_caches_nothing(cache: Cache) -> None:
    async def fail() -> None:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        await cache.get_or_compute(SLOW, "failing", fail)
    calls = Calls()
    # Another caller takes the lock at once (it would otherwise wait for the lock to expire).
    assert await cache.get_or_compute(SLOW, "failing", calls) == {"call": 1}


async def test_stale_entry_served_while_one_caller_refreshes(
    tmp_path: Path, redis_url: str
) -> None:
    # The entry is made stale on purpose (`end_freshness`), and the refreshed entry stays fresh
    # far longer than the test runs, however slow the machine.
    settings = cache_settings(
        tmp_path,
        redis_url,
        cache_ttl_seconds={"default": 60},
        cache_stale_ratio=1,
        cache_ttl_jitter=0,
    )
    services = [RedisService(settings), RedisService(settings)]
    for service in services:
        await service.start()
    first, second = (Cache(settings, service) for service in services)
    calls = Calls(delay=0.3)
    assert await first.get_or_compute(FLEETING, "swr", calls) == {"call": 1}

    client = redis.asyncio.Redis.from_url(redis_url)
    await end_freshness(client, first.entry_key(FLEETING, "swr"))

    results = await asyncio.gather(
        *(instance.get_or_compute(FLEETING, "swr", calls) for instance in [first, second] * 10)
    )
    assert calls.count == 2  # exactly one refresh
    # The refreshing caller (and its in-process followers) get the new value, the rest the old.
    assert {result["call"] for result in results} == {1, 2}
    assert await second.get_or_compute(FLEETING, "swr", calls) == {"call": 2}
    await client.aclose()
    for service in services:
        await service.close()


async def test_per_user_namespace_keeps_users_apart(cache: Cache) -> None:
    async def alice() -> str:
        return "alice's data"

    async def bob() -> str:
        return "bob's data"

    with pytest.raises(ValueError, match="per user"):
        await cache.get_or_compute(PER_USER, "profile", alice)
    assert await cache.get_or_compute(PER_USER, "profile", alice, user_id=1) == "alice's data"
    assert await cache.get_or_compute(PER_USER, "profile", bob, user_id=2) == "bob's data"
    assert await cache.get_or_compute(PER_USER, "profile", bob, user_id=1) == "alice's data"


async def test_cached_decorator_uses_the_explicit_key_builder(cache: Cache) -> None:
    seen: list[tuple[str, int]] = []

    @cached(DECORATED, key=lambda topic, count, note: make_key(topic, count))
    async def generate(topic: str, count: int, note: str) -> list[str]:
        seen.append((topic, count))
        return [f"{topic} {i}" for i in range(count)]

    assert await generate(cache, "sql", 2, note="a") == ["sql 0", "sql 1"]
    assert await generate(cache, "sql", 2, note="ignored by the key") == ["sql 0", "sql 1"]
    assert await generate(cache, "sql", 3, note="a") == ["sql 0", "sql 1", "sql 2"]
    assert seen == [("sql", 2), ("sql", 3)]


async def test_disabled_cache_always_computes(
    tmp_path: Path, redis_url: str, redis_service: RedisService
) -> None:
    cache = Cache(cache_settings(tmp_path, redis_url, cache_enabled=False), redis_service)
    calls = Calls()
    await cache.get_or_compute(PLAIN, "off", calls)
    await cache.get_or_compute(PLAIN, "off", calls)
    assert calls.count == 2
    client = redis.asyncio.Redis.from_url(redis_url)
    assert await client.dbsize() == 0
    await client.aclose()


async def test_redis_stopped_means_bypass_not_errors(
    cache: Cache, redis_server: RedisServer, redis_service: RedisService
) -> None:
    calls = Calls()
    await cache.get_or_compute(TAGGED, "k", calls)
    redis_server.stop()
    for _ in range(5):
        assert (await cache.get_or_compute(TAGGED, "k", calls))["call"] >= 2
    await cache.invalidate("test_tag")  # queued, never raised
    assert not redis_service.available


async def test_invalidation_that_failed_is_sent_before_the_next_read(
    tmp_path: Path, redis_url: str
) -> None:
    # A short read timeout, as in production, so the paused Redis makes the bump time out.
    settings = cache_settings(tmp_path, redis_url, redis_socket_timeout_seconds=0.25)
    redis_service = RedisService(settings)
    await redis_service.start()
    cache = Cache(settings, redis_service)
    calls = Calls()
    await cache.get_or_compute(TAGGED, "pending", calls)
    admin = redis.asyncio.Redis.from_url(redis_url)
    # Scripts wait while writes are paused (CLIENT UNPAUSE still runs); the pause outlasts the
    # timeout however late the bump is sent, and ends when the test says so.
    pause_ms = int((settings.redis_socket_timeout_seconds + LOADED_MACHINE_MARGIN) * 1000)
    await admin.client_pause(pause_ms, all=False)
    await cache.invalidate("test_tag")
    assert not redis_service.available
    await admin.client_unpause()

    async def available() -> bool:
        return redis_service.available

    await wait_until(
        available,
        within=settings.redis_backoff_max_seconds,
        what="the end of the Redis back-off",
    )
    # The pending bump goes first, so this process never reads the entry it invalidated.
    assert await cache.get_or_compute(TAGGED, "pending", calls) == {"call": 2}
    await admin.aclose()
    await redis_service.close()


async def test_metrics_count_hits_misses_recomputes_and_invalidations(cache: Cache) -> None:
    namespace = TAGGED_TOO
    before = {
        name: sample(name, namespace)
        for name in (
            "hiringpro_cache_misses_total",
            "hiringpro_cache_recomputes_total",
            "hiringpro_cache_invalidations_total",
        )
    }
    hits_before = (
        REGISTRY.get_sample_value(
            "hiringpro_cache_hits_total", {"namespace": namespace.name, "state": "fresh"}
        )
        or 0.0
    )
    calls = Calls()
    await cache.get_or_compute(namespace, "m", calls)
    await cache.get_or_compute(namespace, "m", calls)
    await cache.invalidate("test_other")
    assert (
        sample("hiringpro_cache_misses_total", namespace)
        == before["hiringpro_cache_misses_total"] + 1
    )
    assert (
        sample("hiringpro_cache_recomputes_total", namespace)
        == before["hiringpro_cache_recomputes_total"] + 1
    )
    assert (
        sample("hiringpro_cache_invalidations_total", namespace)
        == before["hiringpro_cache_invalidations_total"] + 1
    )
    hits = REGISTRY.get_sample_value(
        "hiringpro_cache_hits_total", {"namespace": namespace.name, "state": "fresh"}
    )
    assert hits == hits_before + 1


async def test_followers_take_over_when_the_leader_is_cancelled(cache: Cache) -> None:
    started = asyncio.Event()

    async def leader_compute() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    async def follower_compute() -> str:
        return "follower's"

    leader = asyncio.create_task(cache.get_or_compute(SLOW, "handover", leader_compute))
    await started.wait()
    followers = [
        asyncio.create_task(cache.get_or_compute(SLOW, "handover", follower_compute))
        for _ in range(5)
    ]
    await asyncio.sleep(0)  # the followers join the leader's flight
    leader.cancel()
    # The leader released its lock, so the followers do not wait for its TTL to run out.
    async with asyncio.timeout(PATIENT_LOCK_TTL_SECONDS / 2):
        results = await asyncio.gather(*followers)
    assert results == ["follower's"] * 5
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_concurrent_reads_of_distinct_keys_each_get_their_own_value(
    cache: Cache, redis_url: str
) -> None:
    """Reads started together share one pipeline; each caller still gets its own entry."""

    def value_for(index: int) -> Callable[[], Awaitable[dict[str, int]]]:
        async def compute() -> dict[str, int]:
            return {"key": index}

        return compute

    first = await asyncio.gather(
        *(cache.get_or_compute(PLAIN, f"batch{i}", value_for(i)) for i in range(40))
    )
    admin = redis.asyncio.Redis.from_url(redis_url)
    await admin.script_flush()  # as after a restart: the pipelined EVALSHAs meet NOSCRIPT
    await admin.aclose()

    async def never() -> dict[str, int]:
        raise AssertionError("entries are cached")

    again = await asyncio.gather(
        *(cache.get_or_compute(PLAIN, f"batch{i}", never) for i in range(40))
    )
    assert first == again == [{"key": i} for i in range(40)]
