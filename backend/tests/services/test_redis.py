"""RedisService against real standalone, Cluster and Sentinel deployments."""

import logging
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis._parsers import _AsyncHiredisParser

from app.config import Settings
from app.services.redis import RedisService
from tests.support.redis_server import RedisServer, free_port
from tests.support.redis_topologies import RedisClusterNodes, RedisSentinelSetup

COUNTER_LUA = "return redis.call('INCR', KEYS[1])"


async def test_start_never_fails_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    service = RedisService(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    with caplog.at_level(logging.WARNING, logger="app.services.redis"):
        await service.start()
        assert service.client is not None
        assert service.available is False
        assert await service.ping() is None
        with pytest.raises(redis.RedisError):
            await service.script(COUNTER_LUA)(keys=["k"])
    await service.close()
    unavailable = [r for r in caplog.records if r.getMessage().startswith("Redis unavailable")]
    assert len(unavailable) == 1  # logged once, not per failure


async def test_no_redis_url_means_no_client() -> None:
    service = RedisService(Settings(redis_url=None))
    await service.start()
    assert service.client is None
    assert service.available is False
    assert await service.ping() is None
    await service.close()


async def test_down_and_up_are_logged_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer()
    server.start()
    service = RedisService(
        Settings(redis_url=server.url, redis_backoff_seconds=0.05, redis_backoff_max_seconds=0.1)
    )
    try:
        with caplog.at_level(logging.WARNING, logger="app.services.redis"):
            await service.start()
            assert await service.ping() is not None
            server.stop()
            for _ in range(5):
                assert await service.ping() is None
            assert service.available is False
            server.start()
            assert await service.ping() is not None
            assert await service.ping() is not None
            assert service.available is True
    finally:
        await service.close()
        server.cleanup()
    messages = [record.getMessage() for record in caplog.records]
    assert sum(m.startswith("Redis unavailable") for m in messages) == 1
    assert messages.count("Redis available again") == 1


async def test_client_is_built_from_settings(redis_url: str) -> None:
    settings = Settings(
        redis_url=redis_url,
        redis_pool_size=7,
        redis_socket_timeout_seconds=0.3,
        redis_connect_timeout_seconds=0.2,
        redis_health_check_interval_seconds=15,
    )
    service = RedisService(settings, client_name="hiring-pro-test-role")
    await service.start()
    try:
        assert isinstance(service.client, redis.asyncio.Redis)
        pool = service.client.connection_pool
        assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
        assert pool.max_connections == 7
        options = pool.connection_kwargs
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.3, 0.2)
        assert options["health_check_interval"] == 15
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            assert isinstance(connection._parser, _AsyncHiredisParser)
        finally:
            await pool.release(connection)
        names = [entry["name"] for entry in await service.client.client_list()]
        assert "hiring-pro-test-role" in names
    finally:
        await service.close()


async def test_scripts_survive_a_flushed_script_cache(redis_url: str) -> None:
    service = RedisService(Settings(redis_url=redis_url))
    await service.start()
    counter = service.script(COUNTER_LUA)
    try:
        assert await counter(keys=["n"]) == 1
        store = redis.Redis.from_url(redis_url)
        store.script_flush()
        store.close()
        assert await counter(keys=["n"]) == 2
    finally:
        await service.close()


@pytest.mark.slow
async def test_cluster_mode_runs_scripts_on_every_slot(redis_cluster: RedisClusterNodes) -> None:
    service = RedisService(Settings(redis_url=redis_cluster.url, redis_mode="cluster"))
    await service.start()
    counter = service.script(COUNTER_LUA)
    try:
        assert await service.ping() is not None
        keys = [f"{{tag{i}}}:n" for i in range(30)]  # spread over the three masters
        assert [await counter(keys=[key]) for key in keys] == [1] * 30
        assert await counter(keys=[keys[0]]) == 2
    finally:
        await service.close()


@pytest.mark.slow
async def test_sentinel_mode_finds_the_master(redis_sentinel: RedisSentinelSetup) -> None:
    service = RedisService(
        Settings(
            redis_url=redis_sentinel.url,
            redis_mode="sentinel",
            redis_sentinel_hosts=redis_sentinel.sentinel_hosts,
        )
    )
    await service.start()
    try:
        assert await service.ping() is not None
        assert await service.script(COUNTER_LUA)(keys=["sentinel:n"]) == 1
        master = redis.Redis(port=redis_sentinel.master.port)
        assert master.get("sentinel:n") == b"1"
        master.close()
    finally:
        await service.close()
