"""The cache-aside engine: single-flight, batched reads, stale-while-revalidate and tag bumps.

See the package docstring for the design (keys, tags, stampedes, round trips, Redis down).
"""

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import update_wrapper
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import redis
from pydantic import BaseModel
from redis.exceptions import NoScriptError

from app.config import Settings
from app.services.cache import scripts
from app.services.cache.codec import (
    CachedBody,
    decode_http_body,
    decode_value,
    encode_http_body,
    encode_value,
)
from app.services.cache.namespaces import Namespace, namespaces_with
from app.services.redis import RedisService

T = TypeVar("T")
P = ParamSpec("P")
ModelT = TypeVar("ModelT", bound=BaseModel)

# Backoff of a caller polling for the entry another process is computing.
_POLL_FIRST_SECONDS = 0.005
_POLL_MAX_SECONDS = 0.05


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
        self._get_or_lock = redis_service.script(scripts.GET_OR_LOCK)
        self._store = redis_service.script(scripts.STORE)
        self._unlock = redis_service.script(scripts.UNLOCK)
        self._bump = redis_service.script(scripts.BUMP)
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
            return encode_http_body(await compute_body())

        payload = await self._fetch(namespace, self._user_key(namespace, key, user_id), produce)
        return decode_http_body(payload)

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
                namespace.metrics.invalidations.inc()
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
            namespace.metrics.hits_merged.inc()
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
            namespace.metrics.bypasses.inc()
            return await produce()
        try:
            result = await self._read(keys)
        except redis.RedisError as exc:
            self._redis.mark_failure(exc)
            namespace.metrics.bypasses.inc()
            return await produce()
        status = result[0]
        if status == scripts.FRESH:
            namespace.metrics.hits_fresh.inc()
            return scripts.entry_payload(result[2])
        if status in (scripts.STALE, scripts.STALE_LOCKED):
            namespace.metrics.hits_stale.inc()
            if status == scripts.STALE:  # another caller refreshes it
                return scripts.entry_payload(result[2])
        else:
            namespace.metrics.misses.inc()
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
        while status == scripts.MISS_WAIT:
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
            if status in (scripts.FRESH, scripts.STALE):
                return scripts.entry_payload(result[2])
        return await self._compute_and_store(namespace, keys, self._token, generations, produce)

    async def _read(self, keys: _Keys) -> Any:
        """One `GET_OR_LOCK` call. Calls made in one event-loop turn share one pipeline: under
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
        namespace.metrics.recomputes.inc()
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
