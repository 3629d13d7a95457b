"""Fixtures for the cache tests: the app and a bare Cache on the worker's private Redis."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.config import Settings
from app.services.cache import Cache
from app.services.redis import RedisService
from tests.services.cache.helpers import cache_settings


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    """Overrides the shared fixture: the `app` and `client` fixtures run with the cache on."""
    return cache_settings(tmp_path, redis_url, database_url=database_url)


@pytest.fixture
async def redis_service(tmp_path: Path, redis_url: str) -> AsyncIterator[RedisService]:
    """A started RedisService on the worker's Redis, with the cache tests' settings."""
    service = RedisService(cache_settings(tmp_path, redis_url), client_name="cache-test")
    await service.start()
    yield service
    await service.close()


@pytest.fixture
def cache(tmp_path: Path, redis_url: str, redis_service: RedisService) -> Cache:
    """A Cache over `redis_service`."""
    return Cache(cache_settings(tmp_path, redis_url), redis_service)
