"""A started RedisService for tests of the code built on it, with settings a loaded machine
never trips: a timed-out Redis call would send the caller to its fallback and change what the
test counts."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from app.config import Settings
from app.services.redis import RedisService
from tests.support.wait import LOADED_MACHINE_MARGIN


def patient_redis_settings(tmp_path: Path, redis_url: str | None, **overrides: Any) -> Settings:
    """Settings with a short Redis back-off (outage tests wait for it) and timeouts no stall of a
    loaded machine reaches; `overrides` set the feature under test."""
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "redis_url": redis_url,
        "redis_backoff_seconds": 0.1,
        "redis_backoff_max_seconds": 0.2,
        "redis_socket_timeout_seconds": LOADED_MACHINE_MARGIN,
        "redis_connect_timeout_seconds": LOADED_MACHINE_MARGIN,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def started_redis_service(
    settings: Settings, client_name: str
) -> AsyncIterator[RedisService]:
    """A RedisService started on `settings` (in-process only when `redis_url` is None), closed
    on exit."""
    service = RedisService(settings, client_name=client_name)
    await service.start()
    try:
        yield service
    finally:
        await service.close()
