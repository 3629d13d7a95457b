"""CPU per request of a cached GET /api/jobs, layer by layer, without a network or a load tool.

Each variant is the real app (create_app) with one part of the request path switched off, or the
bare FastAPI route of bare_app.py, driven in-process: CONCURRENCY tasks call the ASGI app
directly on uvloop (as the production workers run), each request a different seeded user's
token, and the process's CPU time per request is read around REQUESTS requests after a warm-up,
with the Redis script calls (EVALSHA) per request counted by Redis itself. With CONCURRENCY 1
(the default) requests run one after another and share no Redis call: each layer's whole cost;
more tasks show what batching saves. Redis and PostgreSQL are real (layers.sh starts them); the
HTTP server, the client's connection and the load generator are left out, so the differences
between variants are what each layer costs the app. Variants run in separate processes
(metrics and logging are process-wide), interleaved ROUNDS times; the table gives medians.

Usage (from layers.sh, which sets up the environment): layers.py ACCOUNTS.json BODY_FILE
Knobs: REQUESTS (4000), CONCURRENCY (1), ROUNDS (3), VARIANTS (all, comma-separated).
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import uvloop

# Each variant: the settings it switches off (env names), or "bare".
VARIANTS: dict[str, dict[str, str]] = {
    "bare": {},
    "full": {},
    "no_access_log": {"ENABLE_REQUEST_LOGGING": "false"},
    "no_rate_limit": {"RATE_LIMIT_ENABLED": "false"},
    "no_concurrency_limit": {"CONCURRENCY_LIMIT_ENABLED": "false"},
    "no_load_shedder": {"OVERLOAD_ENABLED": "false"},
    "no_limits_no_log": {
        "ENABLE_REQUEST_LOGGING": "false",
        "RATE_LIMIT_ENABLED": "false",
        "CONCURRENCY_LIMIT_ENABLED": "false",
        "OVERLOAD_ENABLED": "false",
    },
}

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def scope_for(token: str, address: str) -> dict[str, Any]:
    """A GET /api/jobs as uvicorn hands it to the app behind one trusted proxy."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/jobs",
        "raw_path": b"/api/jobs",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8810"),
            (b"user-agent", b"layers"),
            (b"accept", b"*/*"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"x-forwarded-for", address.encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8810),
        "state": {},
    }


async def call(app: App, scope: dict[str, Any]) -> int:
    """One request through `app`; its status."""
    status = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope, state={}), receive, send)
    return status


async def measure(
    app: App, scopes: list[dict[str, Any]], requests: int, workers: int
) -> tuple[float, float]:
    """CPU µs per request over `requests` requests from `workers` concurrent tasks, and the
    script calls (EVALSHA: the limiter, the leases and the cache read are each one) it sent to
    Redis per request (a pipeline of them counts each)."""
    statuses: dict[int, int] = {}

    async def client(index: int, count: int) -> None:
        for n in range(count):
            status = await call(app, scopes[(index + n * workers) % len(scopes)])
            statuses[status] = statuses.get(status, 0) + 1

    async def run(total: int) -> None:
        await asyncio.gather(*(client(i, total // workers) for i in range(workers)))

    await run(max(200, workers * 50))  # warm-up: connections, the cache entry, the token caches
    statuses.clear()
    store = redis.Redis.from_url(os.environ["REDIS_URL"])
    store.config_resetstat()
    started = time.process_time()
    await run(requests)
    spent = time.process_time() - started
    calls = store.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    store.close()
    if set(statuses) != {200}:
        raise SystemExit(f"not every request answered 200: {statuses}")
    done = requests // workers * workers
    return spent / done * 1e6, calls / done


async def run_variant(variant: str, accounts: Path, body_file: Path) -> tuple[float, float]:
    """Build the variant's app, open its lifespan, measure it."""
    requests = int(os.environ.get("REQUESTS", "4000"))
    workers = int(os.environ.get("CONCURRENCY", "1"))
    users = json.loads(accounts.read_text())["candidates"]  # noqa: ASYNC240 (before timing)
    scopes = [
        scope_for(user["token"], f"198.18.{n // 250}.{n % 250 + 1}") for n, user in enumerate(users)
    ]
    if variant == "bare":
        os.environ["BARE_BODY_FILE"] = str(body_file)
        sys.path.insert(0, str(Path(__file__).parent))
        from bare_app import app as bare

        return await measure(bare, scopes, requests, workers)

    from app.config import Settings
    from app.config.rate_limits import DEFAULT_TIERS, RateLimitTier
    from app.main import create_app

    # Every user far below its read tier: the limiter decides, it never refuses.
    tiers = dict(DEFAULT_TIERS, read=RateLimitTier(capacity=10**9, refill=10**9))
    app = create_app(Settings(rate_limit_tiers=tiers))
    async with app.router.lifespan_context(app):
        return await measure(app, scopes, requests, workers)


def main() -> None:
    """Run every variant ROUNDS times, interleaved, each in its own process; print the table."""
    accounts, body_file = Path(sys.argv[1]), Path(sys.argv[2])
    if len(sys.argv) > 3:  # a child: one variant
        # Marked: the app's own log lines share stdout.
        result = uvloop.run(run_variant(sys.argv[3], accounts, body_file))
        print("RESULT", *result)
        return
    chosen = os.environ.get("VARIANTS", ",".join(VARIANTS)).split(",")
    results: dict[str, list[float]] = {name: [] for name in chosen}
    calls: dict[str, list[float]] = {name: [] for name in chosen}
    for round_number in range(int(os.environ.get("ROUNDS", "3"))):
        for name in chosen:
            env = dict(os.environ, **VARIANTS[name])
            output = subprocess.run(
                [sys.executable, __file__, str(accounts), str(body_file), name],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = [line for line in output.splitlines() if line.startswith("RESULT ")][-1]
            results[name].append(float(result.split()[1]))
            calls[name].append(float(result.split()[2]))
            print(
                f"round {round_number + 1} {name:22} {results[name][-1]:7.0f} µs"
                f" {calls[name][-1]:5.2f} script calls",
                flush=True,
            )
    bare = statistics.median(results["bare"]) if "bare" in results else None
    print(f"\n{'variant':22} {'µs/request (median)':>20} {'x bare':>7} {'scripts/req':>12}   runs")
    for name, values in results.items():
        median = statistics.median(values)
        ratio = f"{median / bare:7.2f}" if bare else "      -"
        runs = " ".join(f"{value:.0f}" for value in values)
        print(f"{name:22} {median:20.0f} {ratio} {statistics.median(calls[name]):12.2f}   {runs}")


if __name__ == "__main__":
    main()
