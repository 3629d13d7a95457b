"""What the token-version check adds to an authenticated request (run by hand, see run.sh).

Side by side in one run, in alternating rounds (ABAB...) so drift on the shared machine hits
every variant alike:

1. get_current_user alone, µs per call (median of rounds), the token already decoded nowhere:
   - before: the dependency as it was (signature and claims only; sync, called directly);
   - decode only, async: the same work as an async function (what the check is added to);
   - after, warm: signature + version check from this process's map (the hot path);
   - the version check alone, warm (TokenVersions.state from the local map);
   - after, Redis: the local copy always expired, one Redis GET per call (a process's first
     request of a user in each 2 s);
   - after, database: no Redis, the local copy always expired: one query per call (Redis down).
2. In-process requests through the whole app (httpx ASGITransport), requests/s, before vs after:
   `GET /bench/me` (authentication only) and `GET /api/notifications` (plus one small read);
   sequential and 32 at a time. "before" is the app with the old dependency swapped in.

Prints a Markdown table; results.md beside this file records a run.
"""

import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials

from app.config import Settings
from app.deps import (
    CurrentUser,
    SettingsDep,
    _bearer,
    get_current_user,
    token_versions_of,
)
from app.main import create_app
from app.models import User
from app.observability.context import set_user_id
from app.security import TokenClaims, create_access_token, decode_access_token

DATABASE_URL = os.environ["BENCH_DATABASE_URL"]
REDIS_URL = os.environ["BENCH_REDIS_URL"]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CALLS = int(os.environ.get("BENCH_CALLS", "20000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))
CONCURRENCY = 32


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": DATABASE_URL,
        "redis_url": REDIS_URL,
        "jwt_secret": "bench-token-version-secret-0123456789-abcdef",
        "rate_limit_enabled": False,
        "cache_enabled": False,
        "log_level": "WARNING",
        "enable_request_logging": False,
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        **overrides,
    }
    return Settings(**values)


def old_get_current_user(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenClaims:
    """The dependency as it was before token versions (sync: FastAPI ran it in a thread)."""
    if credentials is None:
        raise AssertionError("the bench always sends a token")
    claims = decode_access_token(settings, credentials.credentials)
    set_user_id(claims.user_id)
    return claims


async def decode_only(settings: Settings, credentials: HTTPAuthorizationCredentials) -> None:
    claims = decode_access_token(settings, credentials.credentials)
    set_user_id(claims.user_id)


async def me(user: CurrentUser) -> dict[str, int]:
    return {"id": user.user_id}


async def build(stack: AsyncExitStack, app_settings: Settings, *, before: bool) -> FastAPI:
    app = create_app(app_settings)
    app.add_api_route("/bench/me", me, methods=["GET"])
    if before:
        app.dependency_overrides[get_current_user] = old_get_current_user
    await stack.enter_async_context(app.router.lifespan_context(app))
    return app


async def make_user(app: FastAPI) -> tuple[int, str]:
    async with app.state.resources.database.sessionmaker() as session:
        user = User(email="bench@example.com", password_hash="x", full_name="B", role="candidate")
        session.add(user)
        await session.commit()
        token, _ = create_access_token(app.state.settings, user.id, "candidate", version=0)
        return user.id, token


async def per_call_us(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls * 1e6


async def requests_per_second(client: httpx.AsyncClient, path: str, token: str, conc: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(count: int) -> None:
        for _ in range(count):
            response = await client.get(path, headers=headers)
            if response.status_code != 200:
                raise AssertionError(f"{path}: {response.status_code} {response.text}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(REQUESTS // conc) for _ in range(conc)))
    return (REQUESTS // conc * conc) / (time.perf_counter() - started)


async def main() -> None:
    async with AsyncExitStack() as stack:
        after = await build(stack, settings(), before=False)
        before = await build(stack, settings(), before=True)
        via_redis = await build(stack, settings(token_version_local_ttl_seconds=1e-9), before=False)
        via_database = await build(
            stack, settings(redis_url=None, token_version_local_ttl_seconds=1e-9), before=False
        )
        user_id, token = await make_user(after)
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)
        base = after.state.settings

        async def sync_before() -> None:
            old_get_current_user(base, credentials)

        def current_user(app: FastAPI) -> Callable[[], Awaitable[Any]]:
            stub: Any = SimpleNamespace(app=app)
            return lambda: get_current_user(stub, app.state.settings, credentials)

        functions: dict[str, tuple[Callable[[], Awaitable[Any]], int]] = {
            "before (signature only, sync)": (sync_before, CALLS),
            "decode only, async": (lambda: decode_only(base, credentials), CALLS),
            "after, warm (local map)": (current_user(after), CALLS),
            "the version check alone, warm": (
                lambda: token_versions_of(after).state(user_id, newer_than=0),
                CALLS,
            ),
            "after, local expired: Redis GET": (current_user(via_redis), CALLS // 10),
            "after, no Redis: database query": (current_user(via_database), CALLS // 20),
        }
        for call, _ in functions.values():  # warm up (and fill the caches)
            await call()
        timings: dict[str, list[float]] = {name: [] for name in functions}
        for _ in range(ROUNDS):
            for name, (call, calls) in functions.items():
                timings[name].append(await per_call_us(call, calls))

        clients = {
            label: await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
            )
            for label, app in (("before", before), ("after", after))
        }
        cases = [
            (path, conc)
            for path in ("/bench/me", "/api/notifications")
            for conc in (1, CONCURRENCY)
        ]
        rates: dict[tuple[str, int, str], list[float]] = {}
        for path, conc in cases:  # warm up
            for client in clients.values():
                await requests_per_second(client, path, token, conc)
        for _ in range(ROUNDS):
            for path, conc in cases:
                for label, client in clients.items():
                    rate = await requests_per_second(client, path, token, conc)
                    rates.setdefault((path, conc, label), []).append(rate)

    median = statistics.median
    print(f"user {user_id}; {ROUNDS} alternating rounds; python {sys.version.split()[0]}")
    print()
    print("| get_current_user | µs/call (median) | x before | x decode only |")
    print("|---|---|---|---|")
    first = median(timings["before (signature only, sync)"])
    decode = median(timings["decode only, async"])
    for name, values in timings.items():
        value = median(values)
        print(f"| {name} | {value:.1f} | {value / first:.2f} | {value / decode:.2f} |")
    print()
    print("| route (in-process) | concurrency | before req/s | after req/s | after / before |")
    print("|---|---|---|---|---|")
    for path, conc in cases:
        old, new = median(rates[(path, conc, "before")]), median(rates[(path, conc, "after")])
        print(f"| GET {path} | {conc} | {old:,.0f} | {new:,.0f} | {new / old:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
