"""Cache-aside over Redis: TTL categories, tag generations, single-flight and stored HTTP bodies.

Keys. Every namespace keeps its keys in one Cluster hash slot, ``{prefix}:{<namespace>}:…``:
entries ``…:e:<app version>.<namespace version>:<key>``, their locks ``…:l:…`` and the namespace's
tag generations ``…:t:<tag>``. A deploy that changes a response shape bumps the app or namespace
version, so it never reads old entries; tag keys carry no version, so during a rolling deploy an
invalidation reaches old and new processes alike.

Tags. Each tag of a namespace has a generation counter. An entry records the generations it was
computed under (read *before* the computation) and is served only while they are current, so
invalidating a tag is one counter bump per namespace using it, whatever the number of entries, and
a writer storing a value computed from old data can never make it readable: its generations are
already out of date (the store script then skips the write). Tag keys are bounded (namespaces x
tags); entries expire.

Stampedes. Concurrent callers of one key in a process share one flight. Across processes the read
script takes a short lock when the entry is missing or stale: the lock holder recomputes, others
serve the stale entry (stale-while-revalidate) or poll for the fresh one until the lock's deadline.
Fresh TTLs get jitter so entries written together do not expire together.

Round trips. A lookup is one EVALSHA (entry, tag generations and, on a miss, the lock); lookups
started in the same event-loop turn share one pipeline. A tagged miss costs that plus one
store-and-unlock EVALSHA. Invalidation runs after the database commit (`invalidate_on_commit`
and `CacheInvalidationMiddleware`), before the response that reports the write.

Redis down or unset: every call is a bypass (the computation runs, nothing is cached), never an
error; invalidations that could not be sent are retried before this process reads Redis again.
"""

import asyncio
import hashlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import update_wrapper
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, cast

import orjson
import redis
from prometheus_client import Counter
from pydantic import BaseModel
from redis.exceptions import NoScriptError
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.config import Settings
from app.services.redis import RedisService

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
ModelT = TypeVar("ModelT", bound=BaseModel)

CACHE_HITS = Counter(
    "hiringpro_cache_hits_total",
    "Lookups served from the cache: fresh, stale (while one caller refreshes), or merged into "
    "a concurrent lookup of the same key in this process.",
    ["namespace", "state"],
)
CACHE_MISSES = Counter(
    "hiringpro_cache_misses_total", "Lookups that found no valid entry.", ["namespace"]
)
CACHE_RECOMPUTES = Counter(
    "hiringpro_cache_recomputes_total",
    "Values computed for the cache (by the lock holder).",
    ["namespace"],
)
CACHE_INVALIDATIONS = Counter(
    "hiringpro_cache_invalidations_total", "Tag generation bumps.", ["namespace"]
)
CACHE_BYPASSES = Counter(
    "hiringpro_cache_bypasses_total",
    "Lookups computed without Redis (down or unset).",
    ["namespace"],
)

# Entry payload kinds (first byte after the header).
_KIND_NONE: Final = b"n"
_KIND_JSON: Final = b"j"
_KIND_BYTES: Final = b"b"
_KIND_HTTP: Final = b"h"

# Read statuses returned by _GET_OR_LOCK.
_FRESH, _STALE, _STALE_LOCKED, _MISS_LOCKED, _MISS_WAIT = 0, 1, 2, 3, 4

# Entry layout: "<generations>|<fresh until, Redis ms>|<kind><data>"; generations joined by ",".
#
# KEYS[1] entry, KEYS[2] lock, KEYS[3..] the namespace's tag generations (one slot).
# ARGV[1] lock token, ARGV[2] lock TTL ms.
# Returns {status, generations} plus the entry for statuses 0-2. A missing generation is created
# as the current time in ms: after an eviction it can never equal a generation an old entry holds.
_GET_OR_LOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gens = {}
for i = 3, #KEYS do
  local g = redis.call('GET', KEYS[i])
  if not g then
    g = string.format('%.0f', now)
    redis.call('SET', KEYS[i], g, 'NX')
    g = redis.call('GET', KEYS[i])
  end
  gens[#gens + 1] = g
end
local current = table.concat(gens, ',')
local entry = redis.call('GET', KEYS[1])
if entry then
  local sep1 = string.find(entry, '|', 1, true)
  if sep1 and string.sub(entry, 1, sep1 - 1) == current then
    local sep2 = string.find(entry, '|', sep1 + 1, true)
    if tonumber(string.sub(entry, sep1 + 1, sep2 - 1)) > now then
      return {0, current, entry}
    end
    if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
      return {2, current, entry}
    end
    return {1, current, entry}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {3, current}
end
return {4, current}
"""

# KEYS as _GET_OR_LOCK. ARGV[1] lock token ('' when not holding it), ARGV[2] the generations read
# before computing, ARGV[3] fresh ms, ARGV[4] hard TTL ms, ARGV[5] payload.
# Stores only while the generations are still current; releases the lock if the token holds it.
# Returns 1 when stored, 0 when an invalidation made the value out of date.
_STORE = """
local gens = {}
for i = 3, #KEYS do gens[#gens + 1] = redis.call('GET', KEYS[i]) or '' end
local stored = 0
if table.concat(gens, ',') == ARGV[2] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local fresh_until = string.format('%.0f', now + tonumber(ARGV[3]))
  redis.call('SET', KEYS[1], ARGV[2] .. '|' .. fresh_until .. '|' .. ARGV[5], 'PX', ARGV[4])
  stored = 1
end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return stored
"""

# KEYS[1] lock; ARGV[1] token. Deletes the lock only if this token holds it. Returns 1 or 0.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: tag generation keys of one namespace. Each becomes max(old + 1, now ms): strictly
# increasing, and above any value it had before an eviction. Returns nothing.
_BUMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local g = tonumber(redis.call('GET', KEYS[i]) or '0')
  redis.call('SET', KEYS[i], string.format('%.0f', math.max(g + 1, now)))
end
"""

_POLL_FIRST_SECONDS = 0.005
_POLL_MAX_SECONDS = 0.05

_NAMESPACES: dict[str, "Namespace"] = {}


@dataclass(frozen=True, eq=False)
class Namespace:
    """A family of entries: its TTL category, the tags that invalidate it and a shape version.

    `per_user` namespaces refuse keys without a user id, so one user's data can never be served
    to another. Declared once at import time; the registry lets `invalidate(tag)` find every
    namespace that uses the tag in any process that imports this module.
    """

    name: str
    ttl_category: str = "default"
    tags: tuple[str, ...] = ()
    version: int = 1
    per_user: bool = False
    _hits_fresh: Any = field(init=False, repr=False)
    _hits_stale: Any = field(init=False, repr=False)
    _hits_merged: Any = field(init=False, repr=False)
    _misses: Any = field(init=False, repr=False)
    _recomputes: Any = field(init=False, repr=False)
    _invalidations: Any = field(init=False, repr=False)
    _bypasses: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or any(char in self.name for char in "{}:|"):
            raise ValueError(f"invalid cache namespace name {self.name!r}")
        if self.name in _NAMESPACES:
            raise ValueError(f"cache namespace {self.name!r} is declared twice")
        _NAMESPACES[self.name] = self
        # Bound metric children once: a hit must not pay for a labels() lookup.
        object.__setattr__(self, "_hits_fresh", CACHE_HITS.labels(self.name, "fresh"))
        object.__setattr__(self, "_hits_stale", CACHE_HITS.labels(self.name, "stale"))
        object.__setattr__(self, "_hits_merged", CACHE_HITS.labels(self.name, "merged"))
        object.__setattr__(self, "_misses", CACHE_MISSES.labels(self.name))
        object.__setattr__(self, "_recomputes", CACHE_RECOMPUTES.labels(self.name))
        object.__setattr__(self, "_invalidations", CACHE_INVALIDATIONS.labels(self.name))
        object.__setattr__(self, "_bypasses", CACHE_BYPASSES.labels(self.name))


def make_key(*parts: str | int | float | bool | None) -> str:
    """A fixed-length key for the given parts (a hash of their JSON: no separator ambiguity)."""
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest()


def content_etag(body: bytes) -> str:
    """A strong ETag from the body's hash: the same in every process and after restarts."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot cache a value of type {type(value).__name__}")


def encode_value(value: Any) -> bytes:
    """Entry payload for a value: None, bytes, or anything orjson serialises (pydantic too)."""
    if value is None:
        return _KIND_NONE
    if isinstance(value, bytes):
        return _KIND_BYTES + value
    return _KIND_JSON + orjson.dumps(value, default=_json_default)


def decode_value(payload: bytes) -> Any:
    """The value an `encode_value` payload holds (JSON comes back as plain data)."""
    kind = payload[:1]
    if kind == _KIND_NONE:
        return None
    if kind == _KIND_BYTES:
        return payload[1:]
    if kind == _KIND_JSON:
        return orjson.loads(payload[1:])
    raise ValueError("not a value payload")


def _http_payload(body: bytes) -> bytes:
    return _KIND_HTTP + content_etag(body).encode() + b"\n" + body


@dataclass(frozen=True, slots=True)
class CachedBody:
    """A stored response body and its strong content ETag."""

    etag: str
    body: bytes


def _split_http_payload(payload: bytes) -> CachedBody:
    newline = payload.index(b"\n")
    return CachedBody(payload[1:newline].decode(), payload[newline + 1 :])


class _FlightAbandoned(Exception):
    """The caller leading a flight was cancelled; followers start their own."""


@dataclass(frozen=True, slots=True)
class _Keys:
    entry: str
    lock: str
    script_keys: list[str]  # entry, lock, then the tag generations (the scripts' KEYS)


class Cache:
    """The process's cache-aside layer over `RedisService` (one per process, in its resources)."""

    def __init__(self, settings: Settings, redis_service: RedisService) -> None:
        self.enabled = settings.cache_enabled
        self._redis = redis_service
        self._prefix = settings.cache_key_prefix
        self._version = settings.app_version
        self._ttls = settings.cache_ttl_seconds
        self._stale_ratio = settings.cache_stale_ratio
        self._jitter = settings.cache_ttl_jitter
        self._lock_ms = int(settings.cache_lock_ttl_seconds * 1000)
        # One lock token per process is enough: single-flight means this process holds a key's
        # lock for at most one computation at a time.
        self._token = os.urandom(12).hex()
        self._lock_args = [self._token, str(self._lock_ms)]
        self._get_or_lock = redis_service.script(_GET_OR_LOCK)
        self._store = redis_service.script(_STORE)
        self._unlock = redis_service.script(_UNLOCK)
        self._bump = redis_service.script(_BUMP)
        self._flights: dict[str, list[asyncio.Future[bytes]]] = {}
        self._read_batch: list[tuple[list[str], asyncio.Future[Any]]] = []
        self._batch_tasks: set[asyncio.Task[None]] = set()
        self._pending_tags: set[str] = set()

    # Public API.

    async def get_or_compute(
        self,
        namespace: Namespace,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        *,
        user_id: int | None = None,
    ) -> Any:
        """The cached value for `key`, computing and storing it on a miss.

        Values come back as they decode from JSON (pydantic models as dicts; see `get_model`), or
        as bytes or None; a cached None is a hit, not a miss.
        """

        async def produce() -> bytes:
            return encode_value(await compute())

        return decode_value(
            await self._fetch(namespace, self._user_key(namespace, key, user_id), produce)
        )

    async def get_model(
        self,
        namespace: Namespace,
        key: str,
        model: type[ModelT],
        compute: Callable[[], Awaitable[ModelT]],
        *,
        user_id: int | None = None,
    ) -> ModelT:
        """Like `get_or_compute` for a pydantic model, validated back into `model`."""
        return model.model_validate(
            await self.get_or_compute(namespace, key, compute, user_id=user_id)
        )

    async def http_body(
        self,
        namespace: Namespace,
        key: str,
        compute_body: Callable[[], Awaitable[bytes]],
        *,
        user_id: int | None = None,
    ) -> CachedBody:
        """A response body stored as computed, with its content ETag (see app.http_cache).

        Only successful bodies are cached: an exception from `compute_body` propagates as usual.
        """

        async def produce() -> bytes:
            return _http_payload(await compute_body())

        payload = await self._fetch(namespace, self._user_key(namespace, key, user_id), produce)
        return _split_http_payload(payload)

    async def invalidate(self, *tags: str) -> None:
        """Make every entry under `tags` unreadable: one generation bump per namespace using them.

        Never raises: if Redis cannot take it now, the bump is retried before this process
        reads Redis again. Call it after the database commit (see `invalidate_on_commit`).
        """
        if not tags or self._redis.client is None:
            return
        if not self._redis.available:
            self._pending_tags.update(tags)
            return
        if not await self._send_bumps(set(tags)):
            self._pending_tags.update(tags)

    # Internals.

    def _user_key(self, namespace: Namespace, key: str, user_id: int | None) -> str:
        if namespace.per_user:
            if user_id is None:
                raise ValueError(f"cache namespace {namespace.name!r} is per user: pass user_id")
            return f"u{user_id}:{key}"
        return key

    def _keys(self, namespace: Namespace, key: str) -> _Keys:
        base = f"{self._prefix}:{{{namespace.name}}}"
        versioned = f"{self._version}.{namespace.version}:{key}"
        entry, lock = f"{base}:e:{versioned}", f"{base}:l:{versioned}"
        return _Keys(entry, lock, [entry, lock, *(f"{base}:t:{tag}" for tag in namespace.tags)])

    def entry_key(self, namespace: Namespace, key: str, *, user_id: int | None = None) -> str:
        """The Redis key of an entry (for tests and operators)."""
        return self._keys(namespace, self._user_key(namespace, key, user_id)).entry

    async def _send_bumps(self, tags: set[str]) -> bool:
        namespaces = namespaces_with(tags)
        calls = [
            self._bump(
                keys=[f"{self._prefix}:{{{ns.name}}}:t:{tag}" for tag in ns.tags if tag in tags]
            )
            for ns in namespaces
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = False
        for namespace, result in zip(namespaces, results, strict=True):
            if isinstance(result, redis.RedisError):
                self._redis.mark_failure(result)
                failed = True
            elif isinstance(result, BaseException):
                raise result
            else:
                namespace._invalidations.inc()
        return not failed

    async def _send_pending(self) -> bool:
        """Send the invalidations that failed earlier; False if Redis still refuses them.

        The tags stay pending until the bumps are acknowledged, so concurrent readers keep
        bypassing Redis (or send the bumps too: a repeated bump is harmless) meanwhile.
        """
        tags = set(self._pending_tags)
        if not await self._send_bumps(tags):
            return False
        self._pending_tags -= tags
        return True

    async def _fetch(
        self, namespace: Namespace, key: str, produce: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """Single-flight per key in this process around `_load`."""
        if not self.enabled:
            return await produce()
        keys = self._keys(namespace, key)
        while (waiters := self._flights.get(keys.entry)) is not None:
            # Another caller in this process is loading this key: share its result.
            waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            waiters.append(waiter)
            try:
                payload = await waiter
            except _FlightAbandoned:
                continue
            namespace._hits_merged.inc()
            return payload
        waiters = self._flights[keys.entry] = []
        try:
            payload = await self._load(namespace, keys, produce)
        except BaseException as exc:
            del self._flights[keys.entry]
            # A cancelled leader hands over: its followers start a flight of their own.
            failure = _FlightAbandoned() if isinstance(exc, asyncio.CancelledError) else exc
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
            raise
        del self._flights[keys.entry]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(payload)
        return payload

    async def _load(
        self, namespace: Namespace, keys: _Keys, produce: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        # Redis is read only when available and after our own failed invalidations went out.
        if not self._redis.available or (self._pending_tags and not await self._send_pending()):
            namespace._bypasses.inc()
            return await produce()
        try:
            result = await self._read(keys)
        except redis.RedisError as exc:
            self._redis.mark_failure(exc)
            namespace._bypasses.inc()
            return await produce()
        status = result[0]
        if status == _FRESH:
            namespace._hits_fresh.inc()
            return _entry_payload(result[2])
        if status in (_STALE, _STALE_LOCKED):
            namespace._hits_stale.inc()
            if status == _STALE:  # another caller refreshes it
                return _entry_payload(result[2])
        else:
            namespace._misses.inc()
        return await self._recompute(namespace, keys, status, result[1], produce)

    async def _recompute(
        self,
        namespace: Namespace,
        keys: _Keys,
        status: int,
        generations: bytes,
        produce: Callable[[], Awaitable[bytes]],
    ) -> bytes:
        """Compute under our lock, or wait for the process holding it (until the lock's TTL)."""
        deadline = time.monotonic() + self._lock_ms / 1000
        delay = _POLL_FIRST_SECONDS
        while status == _MISS_WAIT:
            if time.monotonic() + delay > deadline:  # the holder is gone or too slow
                return await self._compute_and_store(namespace, keys, "", generations, produce)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_SECONDS)
            try:
                result = await self._read(keys)
            except redis.RedisError as exc:
                self._redis.mark_failure(exc)
                return await produce()
            status, generations = result[0], result[1]
            if status in (_FRESH, _STALE):
                return _entry_payload(result[2])
        return await self._compute_and_store(namespace, keys, self._token, generations, produce)

    async def _read(self, keys: _Keys) -> Any:
        """One `_GET_OR_LOCK` call. Calls made in one event-loop turn share one pipeline: under
        concurrency a hit costs a fraction of a round trip and of a connection checkout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._read_batch:
            loop.call_soon(self._send_reads)
        self._read_batch.append((keys.script_keys, future))
        return await future

    def _send_reads(self) -> None:
        batch, self._read_batch = self._read_batch, []
        # A task of its own: no caller's cancellation can strand the others' futures.
        task = asyncio.get_running_loop().create_task(self._run_reads(batch))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)

    async def _run_reads(self, batch: list[tuple[list[str], asyncio.Future[Any]]]) -> None:
        results: list[Any]
        try:
            if len(batch) == 1:
                results = [await self._get_or_lock(keys=batch[0][0], args=self._lock_args)]
            else:
                pipeline = cast(Any, self._redis.client).pipeline(transaction=False)
                for keys, _ in batch:
                    pipeline.evalsha(self._get_or_lock.sha, len(keys), *keys, *self._lock_args)
                results = await pipeline.execute(raise_on_error=False)
        except Exception as exc:
            results = [exc] * len(batch)
        for (keys, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # after a Redis restart: reloads the script
                try:
                    result = await self._get_or_lock(keys=keys, args=self._lock_args)
                except Exception as exc:
                    result = exc
            if future.done():  # its caller was cancelled
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _compute_and_store(
        self,
        namespace: Namespace,
        keys: _Keys,
        token: str,
        generations: bytes,
        produce: Callable[[], Awaitable[bytes]],
    ) -> bytes:
        namespace._recomputes.inc()
        try:
            payload = await produce()
        except BaseException:
            if token:
                await self._release(keys.lock, token)
            raise
        ttl_ms = int(self._ttls.get(namespace.ttl_category, self._ttls["default"]) * 1000)
        fresh_ms = max(1, int(ttl_ms * random.uniform(1 - self._jitter, 1 + self._jitter)))
        hard_ms = fresh_ms + int(ttl_ms * self._stale_ratio)
        try:
            await self._store(
                keys=keys.script_keys,
                args=[token, generations, fresh_ms, hard_ms, payload],
            )
        except redis.RedisError as exc:
            self._redis.mark_failure(exc)
        return payload

    async def _release(self, lock: str, token: str) -> None:
        try:
            await self._unlock(keys=[lock], args=[token])
        except redis.RedisError as exc:
            self._redis.mark_failure(exc)


def _entry_payload(entry: bytes) -> bytes:
    """The payload of a stored entry (after "<generations>|<fresh until>|")."""
    first = entry.index(b"|")
    return entry[entry.index(b"|", first + 1) + 1 :]


def cached(
    namespace: Namespace, *, key: Callable[P, str]
) -> Callable[[Callable[P, Awaitable[T]]], Callable[Concatenate[Cache, P], Awaitable[T]]]:
    """Cache an async function's result in `namespace` under the key `key(*args, **kwargs)`.

    The decorated function takes the `Cache` as an extra first argument, so where the cache
    comes from is explicit and the key builder sees exactly the function's own arguments.
    Results come back as `Cache.get_or_compute` returns them (JSON-decoded).
    """

    def decorate(
        function: Callable[P, Awaitable[T]],
    ) -> Callable[Concatenate[Cache, P], Awaitable[T]]:
        async def wrapper(cache: Cache, /, *args: P.args, **kwargs: P.kwargs) -> T:
            result: T = await cache.get_or_compute(
                namespace, key(*args, **kwargs), lambda: function(*args, **kwargs)
            )
            return result

        update_wrapper(wrapper, function)
        return wrapper

    return decorate


# Invalidation after commit. Services call `invalidate_on_commit(session, tag)`; when that session
# commits, the tags go to the current `invalidation_scope`. A web request's scope holds them until
# its response starts (the session dependency commits before the response, so the bump lands after
# the commit and before the client can learn the write succeeded); a worker job's scope sends them
# at once. A rolled back transaction invalidates nothing.

_SESSION_KEY: Final = "cache_invalidate_on_commit"


@dataclass(slots=True, eq=False)
class InvalidationScope:
    """Where committed tags go: held while `holding` (a response is pending), else sent at once."""

    cache: "Cache"
    holding: bool
    tags: set[str] = field(default_factory=set)
    sending: set[asyncio.Task[None]] = field(default_factory=set)

    async def release(self) -> None:
        """Send the held tags; tags committed from now on are sent at commit."""
        self.holding = False
        if self.tags:
            tags = list(self.tags)
            self.tags.clear()
            await self.cache.invalidate(*tags)

    def _committed(self, tags: set[str]) -> None:
        if self.holding:
            self.tags.update(tags)
            return
        task = asyncio.get_running_loop().create_task(self.cache.invalidate(*tags))
        # Kept referenced until done, also past the scope (a commit after its request ended).
        _SENDING.add(task)
        self.sending.add(task)
        task.add_done_callback(_SENDING.discard)
        task.add_done_callback(self.sending.discard)


_SCOPE: ContextVar[InvalidationScope | None] = ContextVar("cache_invalidation_scope", default=None)
_SENDING: set[asyncio.Task[None]] = set()


@asynccontextmanager
async def invalidation_scope(cache: "Cache", *, holding: bool) -> AsyncIterator[InvalidationScope]:
    """Collect the tags committed inside the block; on exit, send what is left and wait for it."""
    scope = InvalidationScope(cache, holding)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
        await scope.release()
        if scope.sending:
            await asyncio.gather(*scope.sending, return_exceptions=True)


@dataclass(slots=True)
class _SessionTags:
    target: InvalidationScope | None
    tags: set[str] = field(default_factory=set)


def invalidate_on_commit(session: AsyncSession | Session, *tags: str) -> None:
    """Invalidate `tags` once `session` commits, through the current `invalidation_scope`."""
    pending: _SessionTags = session.info.setdefault(_SESSION_KEY, _SessionTags(_SCOPE.get()))
    pending.tags.update(tags)


@event.listens_for(Session, "after_commit")
def _send_tags_after_commit(session: Session) -> None:
    pending: _SessionTags | None = session.info.pop(_SESSION_KEY, None)
    if pending is None:
        return
    if pending.target is None:
        logger.warning(
            "cache tags %s committed outside an invalidation scope: not invalidated",
            sorted(pending.tags),
        )
        return
    pending.target._committed(pending.tags)


def namespaces_with(tags: Iterable[str]) -> list[Namespace]:
    """The declared namespaces that one of `tags` invalidates."""
    wanted = set(tags)
    return [ns for ns in _NAMESPACES.values() if wanted.intersection(ns.tags)]
