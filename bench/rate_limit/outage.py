"""Latency the rate limiter adds before, during and after a Redis outage (production settings).

The limiter (RateLimitMiddleware with a real RedisService, default settings) wraps a trivial ASGI
app in this process; 16 concurrent tasks send requests from distinct client addresses and time
each call through the middleware, which is the latency the limiter adds. Measured in-process
because end-to-end latencies on this shared 2-core machine are dominated by other load. Phases:
healthy; Redis stopped (in-process fallback after the first failed call); Redis restarted (back
on Redis once the breaker's back-off ends). The issue's target: p99 added under 50 ms, no 5xx.

Usage (from the repository root): .venv/bin/python bench/rate_limit/outage.py [requests-per-phase]
"""

import asyncio
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "backend"))

from app.config import Settings  # noqa: E402
from app.middleware.rate_limiter import RateLimitMiddleware  # noqa: E402
from app.services.redis import RedisService  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

CONCURRENCY = 16


class _State:
    redis: RedisService


class _App:
    state = _State()


async def trivial(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def call(limiter: RateLimitMiddleware, scope: dict[str, Any]) -> int:
    """Run one request through the limiter; its status."""
    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await limiter(scope, receive, send)
    return status[0]


async def phase(
    limiter: RateLimitMiddleware, app: _App, requests: int, offset: int
) -> tuple[list[float], dict[int, int]]:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            address = f"198.19.{(offset + n) // 256 % 256}.{(offset + n) % 256}".encode()
            scope = {
                "type": "http",
                "method": "GET",
                "path": "/api/jobs",
                "app": app,
                "headers": [(b"x-forwarded-for", address)],
                "client": ("127.0.0.1", 5000),
            }
            started = time.perf_counter()
            status = await call(limiter, scope)
            latencies.append(time.perf_counter() - started)
            codes[status] = codes.get(status, 0) + 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies, codes


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


async def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    redis_server = RedisServer()
    redis_server.start()
    settings = Settings(
        environment="production",
        jwt_secret=secrets.token_urlsafe(48),
        allow_sqlite=True,  # the limiter alone: no database is opened
        redis_url=redis_server.url,
        trusted_proxy_count=1,
    )
    app = _App()
    redis = RedisService(settings)
    await redis.start()
    limiter = RateLimitMiddleware(trivial, settings, redis=redis)
    try:
        await phase(limiter, app, 1000, 0)  # warm-up
        results = {"healthy": await phase(limiter, app, requests, 10_000)}
        redis_server.stop()
        results["redis stopped"] = await phase(limiter, app, requests, 20_000)
        redis_server.start()
        await asyncio.sleep(settings.redis_backoff_max_seconds + 1)
        results["redis restarted"] = await phase(limiter, app, requests, 30_000)
    finally:
        await redis.close()
        redis_server.cleanup()
    lines = [
        "# Redis outage: latency added by the rate limiter",
        "",
        f"Made by `bench/rate_limit/outage.py {requests}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        f" ({CONCURRENCY} concurrent tasks, in-process).",
        "",
        "| phase | requests | p50 ms | p99 ms | max ms | mean ms | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (latencies, codes) in results.items():
        lines.append(
            f"| {name} | {len(latencies)} | {percentile(latencies, 0.5):.3f} "
            f"| {percentile(latencies, 0.99):.3f} | {max(latencies) * 1000:.3f} "
            f"| {statistics.mean(latencies) * 1000:.3f} | {dict(sorted(codes.items()))} |"
        )
    added = percentile(results["redis stopped"][0], 0.99) - percentile(results["healthy"][0], 0.99)
    lines += ["", f"p99 during the outage minus p99 when healthy: {added:+.3f} ms."]
    (HERE / "OUTAGE_RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
