"""Concurrent requests per identity, fleet-wide: leases in Redis, with an in-process twin.

An identity (a user, a client address) may have at most `limit` requests in flight across every
process. Each admitted request holds a lease: a member of the identity's sorted set in Redis,
scored by its expiry in the server's own clock, removed when the request ends. A lease whose
release was lost (a killed worker, a Redis outage) expires after CONCURRENCY_LEASE_TTL_SECONDS
and the next acquisition removes it.

Cost: acquisitions made in one event-loop turn share one script call, and so do releases (as
the rate limiter's decisions do), so a busy process pays far less than two round trips per
request. A release is queued, never awaited: it cannot be skipped by a cancellation, and the
request does not wait for it.

Redis modes, as the rate limiter (limiter.py): no REDIS_URL -> in-process counts at the full limit
(a single dev process); Redis configured but down -> in-process counts at
1/RATE_LIMIT_EXPECTED_PROCESSES of the limit (rounded up) until the RedisService back-off ends,
then back to Redis by itself. Each switch is logged once.
"""

import asyncio
import itertools
import logging
import math
import secrets
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import redis
import redis.asyncio
from redis.crc import key_slot

from app.config import Settings
from app.services.redis import RedisScript, RedisService, ScriptArg

logger = logging.getLogger(__name__)

# KEYS: one identity's leases per acquisition, a sorted set of lease id -> expiry (ms, server
#   time); a key may repeat (one identity's requests of one turn), decided in order.
# ARGV[1]: the lease TTL (ms); then per acquisition its limit and its new lease's (unique) id.
# Returns one integer per acquisition: 1 admitted (lease added), 0 refused (nothing changed).
# Expired leases are removed before counting, so a lost release costs its slot only until it
# expires. The key expires with its newest lease: an idle identity leaves nothing behind (and a
# process configured with a longer TTL keeps its lease's key alive). Time is the server's own
# (TIME), so the clocks of the web hosts never matter.
ACQUIRE_LEASES_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local expiry = string.format('%.0f', now + tonumber(ARGV[1]))
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) < tonumber(ARGV[2 * i]) then
    redis.call('ZADD', key, expiry, ARGV[2 * i + 1])
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', key, newest[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: the identities of the leases to end; ARGV: their lease ids, in the same order.
# Returns the number of leases removed (an expired or already removed one is not there).
RELEASE_LEASES_LUA = """
local removed = 0
for i, key in ipairs(KEYS) do
  removed = removed + redis.call('ZREM', key, ARGV[i])
end
return removed
"""

Source = Literal["redis", "local", "fallback"]
_Item = TypeVar("_Item")


@dataclass(frozen=True, slots=True)
class Lease:
    """One admitted request's slot: in Redis (`source` "redis") or in this process."""

    key: str
    lease_id: str
    source: Source


@dataclass(frozen=True, slots=True)
class Admission:
    """The decision on one request: its lease, or None when refused, and who decided."""

    lease: Lease | None
    source: Source


class LocalLeases:
    """In-flight counts per identity in this process: the no-Redis mode and the fallback.

    A count exists only while its identity has requests in flight, so the table never outgrows
    the process's concurrent requests.
    """

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def acquire(self, key: str, limit: int) -> bool:
        """Take one of `limit` slots of `key`; False when all are taken."""
        held = self._held.get(key, 0)
        if held >= limit:
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        """Give one slot of `key` back."""
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)


class RedisLeases:
    """Runs the lease scripts; the calls of one event-loop turn share one script call.

    On Cluster a script may only touch one slot, so a turn's calls are grouped by slot (a lease
    key is its identity's {hash tag}). At most `max_in_flight` script calls run at once, below
    the connection pool size, so a burst of requests waits here rather than in the pool (whose
    wait would time out and put Redis into back-off for every user of it).
    """

    def __init__(
        self, service: RedisService, ttl_ms: int, batch_max: int, max_in_flight: int
    ) -> None:
        self.service = service
        self._acquire_script = service.script(ACQUIRE_LEASES_LUA)
        self._release_script = service.script(RELEASE_LEASES_LUA)
        self._cluster = isinstance(service.client, redis.asyncio.RedisCluster)
        self._ttl_ms = str(ttl_ms).encode()
        self._batch_max = batch_max
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._acquires: list[tuple[Lease, int, asyncio.Future[bool | None]]] = []
        self._releases: list[Lease] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def acquire(self, lease: Lease, limit: int) -> bool | None:
        """Whether `lease` was added under `limit`; None when Redis is unavailable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool | None] = loop.create_future()
        self._acquires.append((lease, limit, future))
        if len(self._acquires) == 1:
            # Flush after the loop has run every callback that is ready now: concurrent
            # requests join this call instead of each paying a round trip.
            loop.call_soon(self._flush_acquires)
        try:
            return await future
        except asyncio.CancelledError:
            # Cancelled after the answer came, before this request saw it: a cancellation that
            # came earlier cancelled the future, and _run_acquires ends such a lease.
            if future.done() and not future.cancelled() and future.result():
                self.release(lease)
            raise

    def release(self, lease: Lease) -> None:
        """Queue the end of `lease` (sent with this turn's other releases)."""
        self._releases.append(lease)
        if len(self._releases) == 1:
            asyncio.get_running_loop().call_soon(self._flush_releases)

    def _flush_acquires(self) -> None:
        pending, self._acquires = self._acquires, []
        for batch in self._batches(pending, lambda item: item[0].key):
            self._start(self._run_acquires(batch))

    def _flush_releases(self) -> None:
        pending, self._releases = self._releases, []
        for batch in self._batches(pending, lambda lease: lease.key):
            self._start(self._run_releases(batch))

    async def _run_acquires(
        self, batch: list[tuple[Lease, int, asyncio.Future[bool | None]]]
    ) -> None:
        args: list[ScriptArg] = [self._ttl_ms]
        for lease, limit, _ in batch:
            args.extend((limit, lease.lease_id))
        reply = await self._call(self._acquire_script, [item[0].key for item in batch], args)
        for index, (lease, _, future) in enumerate(batch):
            admitted = None if reply is None else reply[index] == 1
            if not future.done():
                future.set_result(admitted)
            elif admitted:
                # Its request was cancelled while waiting: nobody will end this lease.
                self.release(lease)

    async def _run_releases(self, batch: list[Lease]) -> None:
        keys = [lease.key for lease in batch]
        await self._call(self._release_script, keys, [lease.lease_id for lease in batch])

    async def _call(self, script: RedisScript, keys: list[str], args: Sequence[ScriptArg]) -> Any:
        """The script's reply, or None when Redis failed or is in its back-off."""
        service = self.service
        async with self._in_flight:
            # Redis may have failed while this call waited: leave it alone then.
            if not service.available:
                return None
            try:
                reply = await script(keys=keys, args=args)
            except redis.RedisError as exc:
                service.mark_failure(exc)
                return None
        service.mark_success()
        return reply

    def _batches(self, items: list[_Item], key: Callable[[_Item], str]) -> Iterator[list[_Item]]:
        groups: dict[int, list[_Item]] = {}
        if self._cluster:
            for item in items:
                groups.setdefault(key_slot(key(item).encode()), []).append(item)
        else:
            groups[0] = items
        for group in groups.values():
            for start in range(0, len(group), self._batch_max):
                yield group[start : start + self._batch_max]

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class ConcurrencyLimiter:
    """Leases for identities, shared through `redis` (one limiter per RedisService)."""

    def __init__(self, settings: Settings, redis_service: RedisService) -> None:
        self.redis = redis_service
        self._ttl_ms = settings.concurrency_lease_ttl_seconds * 1000
        self._share = settings.rate_limit_expected_processes
        # RATE_LIMIT_BATCH_MAX bounds one lease script call as it bounds a decision call.
        self._batch_max = settings.rate_limit_batch_max
        # A quarter of the shared pool (the rate limiter takes half, the cache and breakers
        # share the rest).
        self._max_in_flight = max(1, settings.redis_pool_size // 4)
        self._redis_leases: RedisLeases | None = None
        self._local = LocalLeases()
        # Lease ids: unique per process (random prefix) and per lease (counter).
        self._id_prefix = secrets.token_hex(8)
        self._ids = itertools.count()
        self._in_fallback = False

    async def acquire(self, identity: str, limit: int) -> Admission:
        """A lease for one more request of `identity`, unless it has `limit` in flight.

        Never raises for Redis trouble (it falls back in-process).
        """
        # One hash slot per identity (Cluster).
        key = f"cl:{{{identity}}}"
        if self.redis.client is None:
            return self._local_admission(key, limit, "local")
        if self.redis.available:
            lease = Lease(key, f"{self._id_prefix}:{next(self._ids)}", "redis")
            admitted = await self._leases().acquire(lease, limit)
            if admitted is not None:
                if self._in_fallback:
                    self._in_fallback = False
                    logger.warning("Concurrency limit back on Redis (fleet-wide leases)")
                return Admission(lease if admitted else None, "redis")
        if not self._in_fallback:
            self._in_fallback = True
            logger.warning(
                "Concurrency limit on in-process counts: 1/%d of each limit per process",
                self._share,
            )
        # Rounded up: one identity's requests spread unevenly over the processes.
        return self._local_admission(key, math.ceil(limit / self._share), "fallback")

    def release(self, lease: Lease) -> None:
        """End `lease` (in Redis: queued, sent within the next loop turns). While Redis is down
        a Redis lease is left to expire by its TTL."""
        if lease.source != "redis":
            self._local.release(lease.key)
        elif self.redis.available:
            self._leases().release(lease)

    def _leases(self) -> RedisLeases:
        leases = self._redis_leases
        if leases is None:
            # Built on first use: the client (and whether it is a Cluster) exists only once the
            # RedisService has started.
            leases = self._redis_leases = RedisLeases(
                self.redis, self._ttl_ms, self._batch_max, self._max_in_flight
            )
        return leases

    def _local_admission(self, key: str, limit: int, source: Source) -> Admission:
        if self._local.acquire(key, limit):
            return Admission(Lease(key, "", source), source)
        return Admission(None, source)
