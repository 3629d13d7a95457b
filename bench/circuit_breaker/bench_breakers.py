"""Circuit breaker benchmark: per-call overhead in CLOSED state, and failure-storm opening time.

Run from backend/ (it starts its own private redis-server on a free port):

    ../.venv/bin/pip install -r ../bench/requirements.txt
    ../.venv/bin/python ../bench/circuit_breaker/bench_breakers.py

Part 1 runs every contender side by side in one process around the same trivial coroutine, Redis on
loopback, and prints a Markdown table (median of several rounds). Part 2 starts 4 processes that
each fire 50 concurrent failing calls at once and report when they first saw the breaker OPEN and
how many calls reached the (failing) upstream.
"""

import asyncio
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

BACKEND = Path(__file__).resolve().parents[2] / "backend"
sys.path.insert(0, str(BACKEND))

import aiobreaker  # noqa: E402
import pybreaker  # noqa: E402
import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from purgatory import AsyncCircuitBreakerFactory  # noqa: E402
from purgatory.service._async.unit_of_work import AsyncRedisUnitOfWork  # noqa: E402

from app.config import Settings  # noqa: E402
from app.services.circuit_breaker import (  # noqa: E402
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
)
from app.services.redis import RedisService  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

ROUNDS = 5
Call = Callable[[], Awaitable[Any]]


async def trivial() -> int:
    return 1


class NaiveRedisBreaker:
    """The plan's design: read the breaker's Redis hash before every call."""

    def __init__(self, client: redis.asyncio.Redis, name: str) -> None:
        self._client = client
        self._key = f"naive:{name}"

    async def call(self, func: Call) -> Any:
        state = await self._client.hgetall(self._key)
        if state.get(b"state") == b"open":
            raise RuntimeError("open")
        try:
            return await func()
        except Exception:
            await self._client.hincrby(self._key, "failures", 1)
            raise


async def measure(call: Call, iterations: int) -> float:
    """Microseconds per call, median of ROUNDS rounds."""
    for _ in range(min(iterations, 200)):
        await call()
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(iterations):
            await call()
        samples.append((time.perf_counter() - started) / iterations * 1e6)
    return statistics.median(samples)


async def overhead(redis_url: str) -> list[tuple[str, float, str]]:
    sync_client = redis.Redis.from_url(redis_url)
    async_client = redis.asyncio.Redis.from_url(redis_url)
    service = RedisService(Settings(redis_url=redis_url))
    await service.start()

    ours = CircuitBreaker("bench", BreakerConfig(), service)
    naive = NaiveRedisBreaker(async_client, "bench")
    pyb = pybreaker.CircuitBreaker(
        fail_max=5,
        reset_timeout=30,
        state_storage=pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, sync_client, namespace="bench"
        ),
    )
    purgatory_redis = AsyncCircuitBreakerFactory(
        default_threshold=5, default_ttl=30, uow=AsyncRedisUnitOfWork(redis_url)
    )
    await purgatory_redis.initialize()
    purgatory_memory = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    await purgatory_memory.initialize()
    aiob = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))

    async def with_pybreaker() -> int:
        # pybreaker is synchronous: its Redis reads and writes block the event loop.
        with pyb.calling():
            return await trivial()

    @purgatory_redis("bench")  # type: ignore[untyped-decorator]
    async def with_purgatory_redis() -> int:
        return await trivial()

    @purgatory_memory("bench")  # type: ignore[untyped-decorator]
    async def with_purgatory_memory() -> int:
        return await trivial()

    contenders: list[tuple[str, Call, int, str]] = [
        ("no breaker", trivial, 200_000, "-"),
        ("naive: HGETALL per call (plan's design)", lambda: naive.call(trivial), 5_000, "Redis"),
        ("pybreaker + CircuitRedisStorage", with_pybreaker, 3_000, "Redis (sync)"),
        ("purgatory + AsyncRedisUnitOfWork", with_purgatory_redis, 3_000, "Redis"),
        ("purgatory in-memory", with_purgatory_memory, 50_000, "process"),
        ("aiobreaker in-memory", lambda: aiob.call_async(trivial), 50_000, "process"),
        ("ours (app.services.circuit_breaker)", lambda: ours.call(trivial), 200_000, "Redis"),
    ]
    results = []
    for name, call, iterations, state in contenders:
        results.append((name, await measure(call, iterations), state))
    await ours.close()
    await service.close()
    await async_client.aclose()
    sync_client.close()
    return results


# --- failure storm across processes --------------------------------------------------------------


def _storm_process(redis_url: str, ready: Any, start: Any, queue: Any) -> None:
    async def run() -> dict[str, float]:
        service = RedisService(Settings(redis_url=redis_url))
        await service.start()
        breaker = CircuitBreaker("storm", BreakerConfig(recovery_timeout=60.0), service)
        reached = 0

        async def failing() -> None:
            nonlocal reached
            reached += 1
            await asyncio.sleep(0.001)  # an upstream that fails after 1 ms
            raise ConnectionError("upstream down")

        async def caller() -> None:
            # Each of the 50 concurrent callers keeps calling until the breaker rejects it.
            while True:
                try:
                    await breaker.call(failing)
                except CircuitOpenError:
                    return
                except ConnectionError:
                    continue

        await breaker.refresh()  # connected and synchronised before the start signal
        ready.put(True)
        await asyncio.get_running_loop().run_in_executor(None, start.wait)
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(50)))
        elapsed = time.perf_counter() - started
        await breaker.close()
        await service.close()
        return {"seconds_to_open": elapsed, "upstream_calls": reached}

    queue.put(asyncio.run(run()))


def storm(redis_url: str, processes: int = 4) -> list[dict[str, float]]:
    context = multiprocessing.get_context("spawn")
    queue, ready, start = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(target=_storm_process, args=(redis_url, ready, start, queue))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=60)
    start.set()  # every process is connected and sees CLOSED: the storm starts together
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(10)
    return results


def main() -> None:
    server = RedisServer()
    server.start()
    try:
        rows = asyncio.run(overhead(server.url))
        redis.Redis.from_url(server.url).flushall()
        storm_rows = storm(server.url)
    finally:
        server.cleanup()

    ours = next(us for name, us, _ in rows if name.startswith("ours"))
    print(f"Python {sys.version.split()[0]}, redis-server on loopback, median of {ROUNDS} rounds\n")
    print("| breaker | state kept in | us per call (CLOSED) | x ours |")
    print("|---|---|---:|---:|")
    for name, us, state in rows:
        print(f"| {name} | {state} | {us:.2f} | {us / ours:.1f} |")
    print("\nFailure storm: 4 processes x 50 concurrent callers, upstream failing after 1 ms\n")
    print("| process | time until its calls fail fast (ms) | calls that reached the upstream |")
    print("|---:|---:|---:|")
    for index, row in enumerate(storm_rows, 1):
        print(f"| {index} | {row['seconds_to_open'] * 1000:.1f} | {int(row['upstream_calls'])} |")
    total = sum(int(row["upstream_calls"]) for row in storm_rows)
    print(f"\nUpstream calls in total: {total} (threshold 5).")


if __name__ == "__main__":
    main()
