"""Helpers for the cache tests: settings sized for a loaded machine, and entries made stale."""

from pathlib import Path
from typing import cast

import redis.asyncio

from app.config import Settings
from tests.conftest import make_settings
from tests.support.wait import LOADED_MACHINE_MARGIN

# These tests count computations and check orderings exactly, and a Redis call that times out
# sends a process to its bypass path by design, so Redis must never look down just because a
# loaded 2-core machine answered late: they are about correctness, not speed.
PATIENT_REDIS_TIMEOUT_SECONDS = LOADED_MACHINE_MARGIN
# No lock holder in these tests computes for more than a second; a waiter must never give up on a
# live holder because the machine stalled it, and a test that times out where a released lock
# matters must time out well before a held lock would expire.
PATIENT_LOCK_TTL_SECONDS = 3 * LOADED_MACHINE_MARGIN


def cache_settings(tmp_path: Path, redis_url: str | None, **overrides: object) -> Settings:
    """Test settings with the cache on, patient Redis timeouts and locks, and a short Redis
    back-off (fault tests wait for it)."""
    values: dict[str, object] = {
        "cache_enabled": True,
        "cache_lock_ttl_seconds": PATIENT_LOCK_TTL_SECONDS,
        "redis_url": redis_url,
        "redis_socket_timeout_seconds": PATIENT_REDIS_TIMEOUT_SECONDS,
        "redis_connect_timeout_seconds": PATIENT_REDIS_TIMEOUT_SECONDS,
        "redis_backoff_seconds": 0.2,
        "redis_backoff_max_seconds": 0.4,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


def patient_server_env() -> dict[str, str]:
    """The environment that gives server processes the timeouts `cache_settings` sets."""
    return {
        "CACHE_LOCK_TTL_SECONDS": str(PATIENT_LOCK_TTL_SECONDS),
        "REDIS_SOCKET_TIMEOUT_SECONDS": str(PATIENT_REDIS_TIMEOUT_SECONDS),
        "REDIS_CONNECT_TIMEOUT_SECONDS": str(PATIENT_REDIS_TIMEOUT_SECONDS),
    }


async def end_freshness(client: redis.asyncio.Redis, entry_key: str) -> None:
    """Make an entry stale now, as if its fresh TTL had passed: it stays servable (stale) for the
    rest of its hard TTL. Tests use this instead of waiting for a short fresh TTL to run out, so
    the refreshed entry can have a fresh TTL no slow machine outlives."""
    # Entry layout (app/services/cache/scripts.py): "<generations>|<fresh until, ms>|<payload>".
    generations, _, payload = cast(bytes, await client.get(entry_key)).split(b"|", 2)
    await client.set(entry_key, b"|".join([generations, b"0", payload]), keepttl=True)
