"""Test-taker markers: in-process, shared between processes through a real Redis, and what
happens without it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio

from app.config import Settings
from app.services.overload.markers import AttemptMarkers
from app.services.redis import RedisService
from tests.services.overload.helpers import FakeClock
from tests.support.redis_server import RedisServer
from tests.support.wait import LOADED_MACHINE_MARGIN

TTL = 1800.0


@asynccontextmanager
async def redis_service(tmp_path: Path, url: str | None) -> AsyncIterator[RedisService]:
    settings = Settings(
        data_dir=tmp_path,
        redis_url=url,
        redis_socket_timeout_seconds=LOADED_MACHINE_MARGIN,
        redis_connect_timeout_seconds=1.0,
    )
    service = RedisService(settings, client_name="markers-test")
    await service.start()
    try:
        yield service
    finally:
        await service.close()


def markers(service: RedisService | None, clock: FakeClock) -> AttemptMarkers:
    return AttemptMarkers(
        service,
        key_prefix="hpt",
        ttl_seconds=TTL,
        timeout_seconds=LOADED_MACHINE_MARGIN,
        clock=clock,
    )


async def test_a_marker_lives_for_its_lifetime_and_ends_with_the_attempt() -> None:
    clock = FakeClock()
    local = markers(None, clock)
    assert not await local.is_marked(7)
    await local.mark(7)
    assert await local.is_marked(7)
    assert not await local.is_marked(8)
    clock.advance(TTL - 1)
    assert await local.is_marked(7)
    await local.mark(7)  # every critical request extends it
    clock.advance(TTL - 1)
    assert await local.is_marked(7)
    clock.advance(2)
    assert not await local.is_marked(7)
    await local.mark(7)
    await local.clear(7)
    assert not await local.is_marked(7)


async def test_processes_share_markers_through_redis(tmp_path: Path, redis_url: str) -> None:
    clock = FakeClock()
    async with (
        redis_service(tmp_path, redis_url) as first,
        redis_service(tmp_path, redis_url) as second,
    ):
        marking, asking = markers(first, clock), markers(second, clock)
        await marking.mark(7)
        assert await asking.is_marked(7)
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            assert 0 < await client.ttl("hpt:ia:7") <= TTL
            # A completion on the asking process clears the shared key.
            await asking.clear(7)
            assert await client.exists("hpt:ia:7") == 0
        finally:
            await client.aclose()
        third = markers(second, clock)
        assert not await third.is_marked(7)


async def test_an_unmarked_user_is_not_looked_up_again_at_once(
    tmp_path: Path, redis_url: str
) -> None:
    clock = FakeClock()
    async with (
        redis_service(tmp_path, redis_url) as first,
        redis_service(tmp_path, redis_url) as second,
    ):
        asking = markers(second, clock)
        assert not await asking.is_marked(7)
        await markers(first, clock).mark(7)
        # The negative answer is kept a few seconds, then Redis is asked again.
        assert not await asking.is_marked(7)
        clock.advance(6)
        assert await asking.is_marked(7)


async def test_redis_writes_are_refreshed_at_most_once_a_minute(
    tmp_path: Path, redis_url: str
) -> None:
    clock = FakeClock()
    async with redis_service(tmp_path, redis_url) as service:
        marking = markers(service, clock)
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await marking.mark(7)
            await client.delete("hpt:ia:7")
            clock.advance(30)
            await marking.mark(7)
            assert await client.exists("hpt:ia:7") == 0  # not rewritten yet
            clock.advance(31)
            await marking.mark(7)
            assert await client.exists("hpt:ia:7") == 1
        finally:
            await client.aclose()


async def test_with_redis_down_each_process_keeps_its_own(
    tmp_path: Path, stopped_redis: RedisServer
) -> None:
    clock = FakeClock()
    async with redis_service(tmp_path, stopped_redis.url) as service:
        marking = markers(service, clock)
        await marking.mark(7)
        assert await marking.is_marked(7)
        assert not service.available
        assert not await markers(service, clock).is_marked(7)
