"""Which users are taking a test right now, so that their logins count as critical.

The load shedder sees a request before the app, so it cannot ask the database whether the user
has an open attempt without adding the very load it is shedding. It keeps a marker instead: a
successful critical request (start, answer, submit) marks its user for
OVERLOAD_ATTEMPT_MARKER_SECONDS, every further one extends it, and a successful completion
clears it. A login is critical when it carries a bearer token (signature valid; expired for at
most the marker's lifetime, the case of a token that ran out mid-test) whose user is marked.

Where the marker lives, cheapest first: this process's map, then one Redis key per user
(``<cache prefix>:ia:<user id>``, written at most once a minute per user and process), so a
login reaching any process of the fleet finds it. Lookups only happen for logins that cannot be
admitted at once: an idle process spends nothing on them.

What it does not cover: a test-taker who lost their token (new browser, cleared storage) logs in
at normal priority; a completion seen by another process clears this process's own copy only
when it expires (its user's logins stay critical meanwhile, never the other way round). Without
Redis, or while it is down, each process knows only the test-takers it served itself.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from app.services.redis import RedisService

logger = logging.getLogger(__name__)

# How often one process rewrites a marker it keeps extending locally (it bounds Redis writes to
# one per active test-taker per process per interval).
_REFRESH_SECONDS = 60.0
# A user found unmarked in Redis is not looked up again for this long.
_NEGATIVE_SECONDS = 5.0
# Past this size, expired entries are dropped (and everything if all are live).
_LOCAL_MAX_ENTRIES = 100_000


class AttemptMarkers:
    """Users seen taking a test: this process's map, shared through Redis when it is there."""

    def __init__(
        self,
        redis_service: RedisService | None,
        *,
        key_prefix: str,
        ttl_seconds: float,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis_service
        self._prefix = key_prefix
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        # user id -> (marked until, last Redis write); a negative lookup is (-until, 0).
        self._local: dict[int, tuple[float, float]] = {}

    def _key(self, user_id: int) -> str:
        return f"{self._prefix}:ia:{user_id}"

    async def mark(self, user_id: int) -> None:
        """The user is taking a test (a critical request of theirs just succeeded)."""
        now = self._clock()
        previous = self._local.get(user_id)
        written = previous[1] if previous is not None and previous[0] > 0 else 0.0
        if written and now - written < _REFRESH_SECONDS:
            self._remember(user_id, now + self._ttl, written)
            return
        key, ttl = self._key(user_id), int(self._ttl)
        stored = await self._redis_call(lambda client: client.set(key, b"1", ex=ttl))
        self._remember(user_id, now + self._ttl, now if stored is not None else 0.0)

    async def clear(self, user_id: int) -> None:
        """The user's attempt is over (completed)."""
        self._local.pop(user_id, None)
        key = self._key(user_id)
        await self._redis_call(lambda client: client.delete(key))

    async def is_marked(self, user_id: int) -> bool:
        """Whether the user was seen taking a test within the marker's lifetime."""
        now = self._clock()
        entry = self._local.get(user_id)
        if entry is not None:
            until = entry[0]
            if until > now:
                return True
            if -until > now:
                return False  # looked up recently and not marked
        key = self._key(user_id)
        found = await self._redis_call(lambda client: client.exists(key))
        if found:
            # Trusted locally only briefly: a completion elsewhere deletes the key.
            self._remember(user_id, now + _NEGATIVE_SECONDS, now)
            return True
        self._remember(user_id, -(now + _NEGATIVE_SECONDS), 0.0)
        return False

    def _remember(self, user_id: int, until: float, written: float) -> None:
        if len(self._local) >= _LOCAL_MAX_ENTRIES and user_id not in self._local:
            now = self._clock()
            self._local = {
                user: entry for user, entry in self._local.items() if abs(entry[0]) > now
            }
            if len(self._local) >= _LOCAL_MAX_ENTRIES:
                self._local.clear()
        self._local[user_id] = (until, written)

    async def _redis_call(self, command: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run one command on the client; None when Redis is unset, in back-off or failed
        (the service logs the failure)."""
        service = self.redis
        if service is None or not service.available:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                result = await command(service.client)
        except (redis.RedisError, TimeoutError) as exc:
            service.mark_failure(exc)
            return None
        service.mark_success()
        return result
