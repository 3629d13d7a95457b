"""Fixtures for the cache tests: the app and a bare Cache on the worker's private Redis."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.config import Settings
from app.services.cache import Cache
from app.services.redis import RedisService
from tests.conftest import make_settings


def cache_settings(tmp_path: Path, redis_url: str | None, **overrides: object) -> Settings:
    """Test settings with the cache on and a short Redis back-off (fault tests wait for it)."""
    values: dict[str, object] = {
        "cache_enabled": True,
        "redis_url": redis_url,
        "redis_backoff_seconds": 0.2,
        "redis_backoff_max_seconds": 0.4,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    """Overrides the shared fixture: the `app` and `client` fixtures run with the cache on."""
    return cache_settings(tmp_path, redis_url, database_url=database_url)


@pytest.fixture
async def redis_service(tmp_path: Path, redis_url: str) -> AsyncIterator[RedisService]:
    service = RedisService(cache_settings(tmp_path, redis_url), client_name="cache-test")
    await service.start()
    yield service
    await service.close()


@pytest.fixture
def cache(tmp_path: Path, redis_url: str, redis_service: RedisService) -> Cache:
    return Cache(cache_settings(tmp_path, redis_url), redis_service)
