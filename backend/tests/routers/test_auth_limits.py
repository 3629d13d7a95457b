"""The auth routes' own limits in the real app: failed logins per account across client addresses
and processes (without locking the real user out), reset e-mails per recipient, the auth tier
keyed by address, and logins while Redis is down."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.config.rate_limits import DEFAULT_TIERS, RateLimitTier
from app.models import EmailOutbox
from app.services.job_queue import JobQueue
from tests.conftest import TEST_JWT_SECRET
from tests.middleware.rate_limiter.helpers import REDIS_TIMEOUTS
from tests.support.apps import AppFactory, client_for
from tests.support.factories import PASSWORD, auth, register_candidate
from tests.support.redis_server import RedisServer
from tests.support.uvicorn_processes import UvicornProcesses
from tests.support.wait import wait_until

VICTIM = "victim@example.com"
WRONG = "Not-the-password-1!"
# Roomy enough that the per-address tier never decides these tests.
ROOMY_AUTH = RateLimitTier(capacity=1000, refill=1000, key_by="ip")
AUTH_LIMITS_LOGGER = "app.services.ratelimit.auth_limits"


def limit_overrides(redis_url: str | None, **extra: Any) -> dict[str, Any]:
    """App settings with the limits on, clients named by X-Forwarded-For (one trusted hop)."""
    return {
        "redis_url": redis_url,
        "rate_limit_enabled": True,
        "rate_limit_tiers": {**DEFAULT_TIERS, "auth": ROOMY_AUTH},
        "trusted_proxy_count": 1,
        "redis_backoff_seconds": 0.1,
        "redis_backoff_max_seconds": 0.2,
        **REDIS_TIMEOUTS,
        **extra,
    }


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def login(
    client: httpx.AsyncClient, address: str, password: str, email: str = VICTIM, path: str = ""
) -> httpx.Response:
    return await client.post(
        f"/api/auth{path}/login",
        json={"email": email, "password": password},
        headers=from_address(address),
    )


def assert_throttled(response: httpx.Response, window_seconds: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "login_throttled"
    assert 1 <= int(response.headers["Retry-After"]) <= window_seconds
    assert response.json()["error"]["retry_after"] == int(response.headers["Retry-After"])


@asynccontextmanager
async def app_and_client(
    app_with: AppFactory, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with app_with(**overrides) as app, client_for(app) as client:
        yield app, client


@pytest.mark.slow
async def test_failed_logins_from_many_addresses_on_two_processes_stop_at_the_limit(
    tmp_path: Path, client: httpx.AsyncClient, database_url: str, redis_url: str
) -> None:
    await register_candidate(client, email=VICTIM)
    env = {
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATA_DIR": str(tmp_path / "server-data"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_TIERS": json.dumps(
            {
                name: tier.model_dump()
                for name, tier in {**DEFAULT_TIERS, "auth": ROOMY_AUTH}.items()
            }
        ),
        "TRUSTED_PROXY_COUNT": "1",
        "LOGIN_ACCOUNT_FAILURE_LIMIT": "5",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        **{name.upper(): str(value) for name, value in REDIS_TIMEOUTS.items()},
    }
    servers = UvicornProcesses("app.main:app", 2, env)
    await asyncio.to_thread(servers.start)
    try:
        first, second = (httpx.AsyncClient(base_url=url, timeout=30.0) for url in servers.urls)
        async with first, second:
            home = "192.0.2.10"
            assert (await login(first, home, PASSWORD)).status_code == 200
            attack = await asyncio.gather(
                *(login((first, second)[n % 2], f"198.51.100.{n}", WRONG) for n in range(1, 15))
            )
            codes = [response.status_code for response in attack]
            assert codes.count(401) == 5
            assert codes.count(429) == 9
            for response in attack:
                if response.status_code == 429:
                    assert_throttled(response, 900)
            # The real user, from where they logged in before, on either process.
            assert (await login(first, home, PASSWORD)).status_code == 200
            assert (await login(second, home, PASSWORD)).status_code == 200
            # A stranger with the right password is refused before the check, on both routes.
            assert_throttled(await login(second, "203.0.113.77", PASSWORD), 900)
            assert_throttled(await login(first, "203.0.113.78", PASSWORD, path="/admin"), 900)
    finally:
        await asyncio.to_thread(servers.stop)


@pytest.mark.parametrize("backend", ["redis", "embedded"])
async def test_unknown_accounts_are_answered_like_existing_ones(
    app_with: AppFactory, request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    overrides = limit_overrides(url, login_account_failure_limit=2)
    async with app_and_client(app_with, **overrides) as (_, client):
        await register_candidate(client, email=VICTIM)
        answers = {}
        for email in (VICTIM, "nobody@example.com"):
            responses = [
                await login(client, f"198.51.100.{n}", WRONG, email=email) for n in range(1, 5)
            ]
            answers[email] = [(r.status_code, r.json()["error"]["code"]) for r in responses]
    expected = [(401, "invalid_credentials")] * 2 + [(429, "login_throttled")] * 2
    assert answers == {VICTIM: expected, "nobody@example.com": expected}


async def test_the_real_user_logs_in_while_strangers_are_throttled(
    app_with: AppFactory, redis_url: str
) -> None:
    overrides = limit_overrides(redis_url, login_account_failure_limit=3)
    async with app_and_client(app_with, **overrides) as (_, client):
        await register_candidate(client, email=VICTIM)
        assert (
            await login(client, "192.0.2.10", PASSWORD, email="Victim@Example.com")
        ).status_code == 200
        for n in range(1, 4):
            assert (await login(client, f"198.51.100.{n}", WRONG)).status_code == 401
        assert_throttled(await login(client, "198.51.100.9", PASSWORD), 900)
        assert (await login(client, "192.0.2.10", PASSWORD)).status_code == 200
        assert_throttled(await login(client, "198.51.100.10", PASSWORD), 900)


async def test_one_address_failing_on_many_accounts_is_throttled(
    app_with: AppFactory, redis_url: str
) -> None:
    overrides = limit_overrides(redis_url, login_address_failure_limit=4)
    async with app_and_client(app_with, **overrides) as (_, client):
        codes = [
            (await login(client, "198.51.100.1", WRONG, email=f"user{n}@example.com")).status_code
            for n in range(6)
        ]
        other = await login(client, "198.51.100.2", WRONG, email="user0@example.com")
    assert codes == [401] * 4 + [429] * 2
    assert other.status_code == 401


async def test_reset_emails_per_recipient_are_capped_with_identical_answers(
    app_with: AppFactory, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with app_and_client(app_with, **limit_overrides(redis_url)) as (app, client):
        await register_candidate(client, email=VICTIM)
        await register_candidate(client, email="other@example.com")
        with caplog.at_level(logging.INFO, logger=AUTH_LIMITS_LOGGER):
            responses = [
                await client.post(
                    "/api/auth/forgot-password",
                    json={"email": email},
                    headers=from_address(f"198.51.100.{n}"),
                )
                for n, email in enumerate([VICTIM, "VICTIM@example.com", "Victim@Example.COM"] * 2)
            ]
            other = await client.post(
                "/api/auth/forgot-password", json={"email": "other@example.com"}
            )
        jobs: JobQueue = app.state.resources.jobs

        async def queue_idle() -> bool:
            local = (await jobs.depths())["local"]
            return local is not None and local["in_flight"] == 0

        # The background tasks (limit check, enqueue) ran before each response was complete.
        await wait_until(queue_idle, within=10, what="the reset emails to be handled")
        async with app.state.resources.database.sessionmaker() as session:
            rows = dict(
                (
                    await session.execute(
                        select(EmailOutbox.recipient, func.count()).group_by(EmailOutbox.recipient)
                    )
                ).all()
            )
    assert rows == {VICTIM: 3, "other@example.com": 1}
    assert {(r.status_code, r.content) for r in [*responses, other]} == {
        (202, responses[0].content)
    }
    suppressed = [r.getMessage() for r in caplog.records if r.name == AUTH_LIMITS_LOGGER]
    assert len(suppressed) == 3
    assert all("recipient limit" in line and "@" not in line for line in suppressed)


async def test_admin_login_and_reset_password_are_in_the_auth_tier_whatever_the_token(
    app_with: AppFactory, redis_url: str
) -> None:
    tiers = {
        **DEFAULT_TIERS,
        "auth": RateLimitTier(capacity=5, refill=1, period_seconds=3600, key_by="ip"),
    }
    overrides = limit_overrides(redis_url, rate_limit_tiers=tiers)
    async with app_and_client(app_with, **overrides) as (_, client):
        # Registering takes the first of the address's 5 auth tokens.
        token = (await register_candidate(client))["access_token"]
        paths = ["login", "admin/login", "forgot-password", "reset-password"]
        answers = [
            await client.post(f"/api/auth/{path}", json={}, headers=auth(token)) for path in paths
        ]
        refused = [
            await client.post(f"/api/auth/{path}", json={}, headers=auth(token))
            for path in ("admin/login", "reset-password")
        ]
    assert [r.status_code for r in answers] == [422] * 4
    assert [r.status_code for r in refused] == [429, 429]
    assert {r.json()["error"]["category"] for r in refused} == {"auth"}


async def test_logins_work_while_redis_is_down(
    app_with: AppFactory, stopped_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = limit_overrides(stopped_redis.url, login_account_failure_limit=1)
    with caplog.at_level(logging.WARNING, logger=AUTH_LIMITS_LOGGER):
        async with app_and_client(app_with, **overrides) as (_, client):
            await register_candidate(client, email=VICTIM)
            wrong = [(await login(client, f"198.51.100.{n}", WRONG)).status_code for n in range(3)]
            right = await login(client, "198.51.100.9", PASSWORD)
            forgot = await client.post("/api/auth/forgot-password", json={"email": VICTIM})
    assert wrong == [401, 401, 401]
    assert right.status_code == 200
    assert forgot.status_code == 202
    assert any(
        "off while Redis is unavailable" in r.getMessage()
        for r in caplog.records
        if r.name == AUTH_LIMITS_LOGGER
    )
