"""Cache micro-benchmarks, side by side in one run against one private redis-server.

1. Hits of a 2 KB JSON value, 64 concurrent tasks over 64 keys: raw GET + orjson (the floor),
   aiocache (RedisCache + JsonSerializer), cashews (redis backend), ours (get_or_compute) and
   ours serving stored bytes (the HTTP path, `Cache.response`'s core without decoding).
2. The same with all 64 tasks on one hot key.
3. Tag invalidation for 1 / 1,000 / 100,000 tagged entries: ours (one generation bump) vs
   cashews (delete_tags).
4. Round trips of a tagged miss (get, compute, store): counted as packets redis-py sends.

Prints a JSON document (consumed by run.py). Usage (from the repository root):
    .venv/bin/python bench/cache/bench_micro.py [hits | invalidation_ms | miss_round_trips ...]
"""

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio
from redis.asyncio.connection import Connection

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "backend"))

from app.config import Settings  # noqa: E402
from app.services.cache import Cache, Namespace  # noqa: E402
from app.services.redis import RedisService  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

TASKS = 64
HITS_PER_TASK = 300
ROUNDS = 7
INVALIDATION_REPEATS = 9
BENCH_NS = Namespace("bench_values", tags=("bench_tag",))
INVALIDATION_NS = Namespace("bench_invalidation", tags=("bench_inv",))
MISS_NS = Namespace("bench_miss", tags=("bench_miss_tag",))
VALUE: dict[str, Any] = {
    "items": [
        {
            "id": i,
            "title": f"Senior Python Developer {i}",
            "company": "Acme",
            "location": "Berlin",
            "job_type": "Full Time",
            "skills": ["python", "fastapi", "postgres"],
            "description": "Build and run APIs with FastAPI and PostgreSQL " * 2,
        }
        for i in range(9)
    ],
    "page": 1,
}


# Round trips: every packet a redis-py connection writes (a pipeline is one).
SENT = {"count": 0}
_original_send = Connection.send_packed_command


async def _counting_send(self: Connection, command: Any, check_health: bool = True) -> None:
    SENT["count"] += 1
    await _original_send(self, command, check_health)


Connection.send_packed_command = _counting_send  # type: ignore[method-assign]


async def per_hit_us(get: Callable[[str], Awaitable[Any]], keys: list[str]) -> float:
    """Wall time per hit of one round: TASKS tasks, task i reading keys[i] HITS_PER_TASK times."""

    async def worker(key: str) -> None:
        for _ in range(HITS_PER_TASK):
            await get(key)

    started = time.perf_counter()
    await asyncio.gather(*(worker(key) for key in keys))
    return (time.perf_counter() - started) / (len(keys) * HITS_PER_TASK) * 1e6


async def hits(url: str, settings: Settings) -> dict[str, dict[str, float]]:
    from aiocache import RedisCache
    from aiocache.serializers import JsonSerializer
    from cashews import Cache as Cashews

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    distinct = [f"k{i}" for i in range(TASKS)]
    hot = ["hot"] * TASKS
    results: dict[str, dict[str, float]] = {}

    raw = redis.asyncio.Redis.from_url(url, max_connections=TASKS)
    for key in set(distinct + hot):
        await raw.set(f"raw:{key}", orjson.dumps(VALUE))

    async def raw_get(key: str) -> Any:
        return orjson.loads(await raw.get(f"raw:{key}"))

    aio = RedisCache(endpoint="127.0.0.1", port=port, serializer=JsonSerializer(), namespace="aio")
    for key in set(distinct + hot):
        await aio.set(key, VALUE)

    async def aio_get(key: str) -> Any:
        return await aio.get(key)

    cashews = Cashews()
    cashews.setup(url, client_side=False)
    for key in set(distinct + hot):
        await cashews.set(f"cw:{key}", VALUE)

    async def cashews_get(key: str) -> Any:
        return await cashews.get(f"cw:{key}")

    service = RedisService(settings)
    await service.start()
    cache = Cache(settings, service)

    async def compute() -> Any:
        return VALUE

    for key in set(distinct + hot):
        await cache.get_or_compute(BENCH_NS, key, compute)
        await cache._fetch(BENCH_NS, "bytes:" + key, _bytes_payload)

    async def ours_get(key: str) -> Any:
        return await cache.get_or_compute(BENCH_NS, key, compute)

    async def ours_bytes(key: str) -> bytes:
        return await cache._fetch(BENCH_NS, "bytes:" + key, _bytes_payload)

    variants = {
        "raw GET + orjson (floor)": raw_get,
        "aiocache 0.12": aio_get,
        "cashews 7.6": cashews_get,
        "ours (get_or_compute, decoded)": ours_get,
        "ours (stored bytes, HTTP path)": ours_bytes,
    }
    samples: dict[tuple[str, str], list[float]] = {}
    # Rounds alternate the variants so drift on a shared machine hits them alike; medians kept.
    for _ in range(ROUNDS):
        for label, keys in (("distinct", distinct), ("hot", hot)):
            for name, get in variants.items():
                samples.setdefault((name, label), []).append(await per_hit_us(get, keys))
    for (name, label), values in samples.items():
        results.setdefault(name, {})[label] = statistics.median(values)
    await raw.aclose()
    await aio.close()
    await cashews.close()
    await service.close()
    return results


_PAYLOAD = b"h" + b'"0123456789abcdef0123456789abcdef"\n' + orjson.dumps(VALUE)


async def _bytes_payload() -> bytes:
    return _PAYLOAD


async def invalidation(url: str, settings: Settings) -> dict[str, dict[int, float]]:
    from cashews import Cache as Cashews

    service = RedisService(settings)
    await service.start()
    cache = Cache(settings, service)
    cashews = Cashews()
    cashews.setup(url, client_side=False)
    cashews.register_tag("inv", "inv:{n}")
    results: dict[str, dict[int, float]] = {
        "ours (tag generation bump)": {},
        "cashews delete_tags": {},
    }
    flush = redis.asyncio.Redis.from_url(url)
    semaphore = asyncio.Semaphore(256)

    async def fill_ours(n: int) -> None:
        async with semaphore:
            await cache.get_or_compute(INVALIDATION_NS, f"e{n}", _small)

    async def fill_cashews(n: int) -> None:
        async with semaphore:
            await cashews.set(f"inv:{n}", {"n": n}, expire=600, tags=["inv"])

    await cache.invalidate("bench_inv")  # loads the script once, outside the timings
    for count in (1, 1_000, 100_000):
        await flush.flushall()
        await asyncio.gather(*(fill_ours(n) for n in range(count)))
        timings = []
        for _ in range(INVALIDATION_REPEATS):  # every bump costs the same: median of several
            started = time.perf_counter()
            await cache.invalidate("bench_inv")
            timings.append((time.perf_counter() - started) * 1000)
        results["ours (tag generation bump)"][count] = statistics.median(timings)
        await flush.flushall()
        await asyncio.gather(*(fill_cashews(n) for n in range(count)))
        started = time.perf_counter()
        await cashews.delete_tags("inv")
        results["cashews delete_tags"][count] = (time.perf_counter() - started) * 1000
    await flush.aclose()
    await cashews.close()
    await service.close()
    return results


async def _small() -> dict[str, int]:
    return {"n": 1}


async def miss_round_trips(url: str, settings: Settings) -> dict[str, float]:
    from cashews import Cache as Cashews

    service = RedisService(settings)
    await service.start()
    cache = Cache(settings, service)
    await cache.get_or_compute(MISS_NS, "warm", _small)  # connection made, script loaded
    cashews = Cashews()
    cashews.setup(url, client_side=False)
    cashews.register_tag("miss", "miss:{n}")
    await cashews.set("miss:warm", 1, tags=["miss"])

    results = {}
    SENT["count"] = 0
    for n in range(100):
        await cache.get_or_compute(MISS_NS, f"m{n}", _small)
    results["ours"] = SENT["count"] / 100
    SENT["count"] = 0
    for n in range(100):
        # cashews' cache-aside: get, then set with its tag on a miss.
        if await cashews.get(f"miss:{n}") is None:
            await cashews.set(f"miss:{n}", {"n": 1}, expire=600, tags=["miss"])
    results["cashews 7.6"] = SENT["count"] / 100
    await cashews.close()
    await service.close()
    return results


async def main() -> None:
    server = RedisServer()
    server.start()
    try:
        settings = Settings(
            jwt_secret="bench-" + "x" * 40,
            redis_url=server.url,
            redis_pool_size=TASKS,
            cache_ttl_seconds={"default": 3600.0},
            redis_socket_timeout_seconds=5.0,
        )
        sections = {
            "hits": hits,
            "invalidation_ms": invalidation,
            "miss_round_trips": miss_round_trips,
        }
        wanted = sys.argv[1:] or list(sections)  # e.g. `bench_micro.py hits` runs one section
        report = {name: await sections[name](server.url, settings) for name in wanted}
    finally:
        server.cleanup()
    json.dump(report, sys.stdout, indent=2)


if __name__ == "__main__":
    asyncio.run(main())
