"""What one shed answer costs the server: CPU time of a worker per 503 `overloaded`.

Run after run.sh (it uses the bench database, seeded, and its accounts file):
    bench/overload/shed_cost.sh

One gunicorn worker runs with the limit pinned to 1 and no background queue, and one client
holds the only slot (a PATCH whose body never comes), so every background request is shed at
once (`at_limit`). The worker's CPU time (from /proc) is read around N shed requests, N
requests to /health (exempt from shedding: the cost of HTTP and the outer middleware alone),
and, once the slot is free, N cached reads of /api/jobs served normally.
"""

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp

N = 4000
CONCURRENCY = int(os.environ.get("BLAST_CONCURRENCY", "8"))


def worker_cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def blast(http: aiohttp.ClientSession, path: str, headers: dict[str, str]) -> dict[int, int]:
    """N GETs of `path`, CONCURRENCY at a time; counts by status."""
    statuses: dict[int, int] = {}
    remaining = N

    async def one() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with http.get(path, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    return statuses


async def measure(host: str, port: int, pid: int, found: dict[str, Any]) -> None:
    """Print the worker's CPU per shed answer, per exempt request and per served read."""
    admin = {
        "Authorization": f"Bearer {found['admins'][0]['token']}",
        "X-Forwarded-For": "10.9.9.9",
    }
    candidate = {
        "Authorization": f"Bearer {found['candidates'][0]['token']}",
        "X-Forwarded-For": "10.9.9.8",
    }
    async with aiohttp.ClientSession(host) as http:
        await blast(http, "/api/jobs", candidate)  # warm the cache and the code paths
        # Hold the only slot: a normal-priority PATCH whose body never arrives.
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        token = found["candidates"][1]["token"]
        writer.write(
            (
                "PATCH /api/profile HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nX-Forwarded-For: 10.9.9.7\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        await asyncio.sleep(0.5)
        for label, path, headers in (
            ("shed background request (503 overloaded)", "/health/detailed", admin),
            ("exempt /health (HTTP + outer middleware only)", "/health", admin),
        ):
            before, started = worker_cpu(pid), time.perf_counter()
            statuses = await blast(http, path, headers)
            cpu = worker_cpu(pid) - before
            wall = time.perf_counter() - started
            print(f"{label}: {cpu / N * 1e6:.0f} us CPU each, {statuses}, {N / wall:.0f}/s")
        writer.close()
        await asyncio.sleep(0.5)
        before = worker_cpu(pid)
        statuses = await blast(http, "/api/jobs", candidate)
        cpu = worker_cpu(pid) - before
        print(f"cached GET /api/jobs served: {cpu / N * 1e6:.0f} us CPU each, {statuses}")


if __name__ == "__main__":
    with open(sys.argv[4]) as accounts:
        asyncio.run(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.load(accounts)))
