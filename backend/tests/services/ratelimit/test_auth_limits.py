"""The auth limits without HTTP: failed logins per account and per address, reset e-mails per
recipient, through Redis and in-process (no REDIS_URL), and open while Redis is down."""

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from app.config import Settings
from app.errors import Forbidden, NotAuthenticated
from app.services.ratelimit.auth_limits import AuthLimits, LoginThrottled
from tests.support.redis_server import RedisServer
from tests.support.redis_service import patient_redis_settings, started_redis_service
from tests.support.wait import wait_until

ACCOUNT = "ada@example.com"
AUTH_LIMITS_LOGGER = "app.services.ratelimit.auth_limits"
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


def limits_settings(tmp_path: Path, redis_url: str | None, **overrides: Any) -> Settings:
    """Small limits on patient Redis settings."""
    values: dict[str, Any] = {
        "login_account_failure_limit": 3,
        "login_address_failure_limit": 4,
        "reset_email_limit": 3,
    }
    values.update(overrides)
    return patient_redis_settings(tmp_path, redis_url, **values)


@asynccontextmanager
async def started_limits(settings: Settings) -> AsyncIterator[AuthLimits]:
    async with started_redis_service(settings, "auth-limits-test") as redis_service:
        yield AuthLimits(settings, redis_service)


@pytest.fixture(params=["redis", "in-process"])
async def limits(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AuthLimits]:
    """The same limits through Redis and without REDIS_URL."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async with started_limits(limits_settings(tmp_path, url)) as auth_limits:
        yield auth_limits


async def attempt(
    limits: AuthLimits, address: str, outcome: str = "wrong", account: str = ACCOUNT
) -> str:
    """One login attempt whose password check ends in `outcome`; returns what the caller saw."""
    try:
        async with limits.login(account, address):
            if outcome == "wrong":
                raise NotAuthenticated(code="invalid_credentials")
            if outcome == "forbidden":
                raise Forbidden()
    except LoginThrottled as exc:
        assert int(exc.headers["Retry-After"]) >= 1
        return exc.code
    except (NotAuthenticated, Forbidden) as exc:
        return exc.code
    return "ok"


async def test_failures_from_many_addresses_throttle_the_account(limits: AuthLimits) -> None:
    seen = [await attempt(limits, next(_addresses)) for _ in range(5)]
    assert seen == ["invalid_credentials"] * 3 + ["login_throttled"] * 2
    # A throttled stranger is refused before the password check, even with the right one.
    assert await attempt(limits, next(_addresses), "ok") == "login_throttled"
    # Other accounts are untouched.
    assert await attempt(limits, next(_addresses), "ok", account="bob@example.com") == "ok"


async def test_an_address_that_logged_in_before_is_not_locked_out(limits: AuthLimits) -> None:
    home = next(_addresses)
    assert await attempt(limits, home, "ok") == "ok"
    for _ in range(4):
        await attempt(limits, next(_addresses))
    assert await attempt(limits, next(_addresses), "ok") == "login_throttled"
    assert await attempt(limits, home, "wrong") == "invalid_credentials"
    assert await attempt(limits, home, "ok") == "ok"
    # The real user's success does not reset the count for strangers.
    assert await attempt(limits, next(_addresses), "ok") == "login_throttled"


async def test_only_wrong_passwords_count(limits: AuthLimits) -> None:
    for outcome in ("ok", "forbidden", "ok", "forbidden", "ok"):
        await attempt(limits, next(_addresses), outcome)
    seen = [await attempt(limits, next(_addresses)) for _ in range(4)]
    assert seen == ["invalid_credentials"] * 3 + ["login_throttled"]


async def test_failures_from_one_address_across_accounts_are_limited(limits: AuthLimits) -> None:
    sprayer = next(_addresses)
    seen = [await attempt(limits, sprayer, account=f"user{n}@example.com") for n in range(6)]
    assert seen == ["invalid_credentials"] * 4 + ["login_throttled"] * 2
    assert await attempt(limits, next(_addresses), account="user9@example.com") == (
        "invalid_credentials"
    )


async def test_the_address_limit_spares_accounts_it_logged_in_to(limits: AuthLimits) -> None:
    office = next(_addresses)
    assert await attempt(limits, office, "ok", account="carol@example.com") == "ok"
    for n in range(4):
        await attempt(limits, office, account=f"user{n}@example.com")
    assert await attempt(limits, office, account="dave@example.com") == "login_throttled"
    assert await attempt(limits, office, "ok", account="carol@example.com") == "ok"


async def test_reset_emails_per_recipient(limits: AuthLimits) -> None:
    allowed = [await limits.reset_email_allowed(ACCOUNT) for _ in range(5)]
    assert allowed == [True] * 3 + [False] * 2
    assert await limits.reset_email_allowed("bob@example.com")


async def test_concurrent_failures_stop_exactly_at_the_limit(
    redis_url: str, tmp_path: Path
) -> None:
    settings = limits_settings(tmp_path, redis_url, login_account_failure_limit=5)
    async with started_limits(settings) as first, started_limits(settings) as second:
        seen = await asyncio.gather(
            *(attempt((first, second)[n % 2], f"203.0.113.{n}") for n in range(20))
        )
    assert seen.count("invalid_credentials") == 5
    assert seen.count("login_throttled") == 15


async def test_known_addresses_are_bounded_and_no_address_is_stored_in_clear(
    redis_url: str, tmp_path: Path
) -> None:
    settings = limits_settings(tmp_path, redis_url, login_known_addresses_max=2)
    async with started_limits(settings) as limits:
        for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            assert await attempt(limits, address, "ok") == "ok"
        await limits.reset_email_allowed(ACCOUNT)
        digest = limits.digest(ACCOUNT)
    store = redis.Redis.from_url(redis_url)
    try:
        keys = {str(key) for key in store.keys("*")}
        assert keys and all(ACCOUNT not in key for key in keys)
        known = store.zrange(f"al:{{a:{digest}}}:k", 0, -1)
        ttl = store.ttl(f"al:{{a:{digest}}}:k")
    finally:
        store.close()
    assert known == [b"192.0.2.2", b"192.0.2.3"]
    assert 29 * 86_400 < ttl <= 30 * 86_400


async def test_redis_down_opens_the_limits_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer()
    server.start()
    settings = limits_settings(tmp_path, server.url, login_account_failure_limit=1)
    try:
        with caplog.at_level(logging.WARNING, logger=AUTH_LIMITS_LOGGER):
            async with started_limits(settings) as limits:
                assert await attempt(limits, next(_addresses)) == "invalid_credentials"
                assert await attempt(limits, next(_addresses)) == "login_throttled"
                server.stop()
                assert await attempt(limits, next(_addresses)) == "invalid_credentials"
                assert await attempt(limits, next(_addresses), "ok") == "ok"
                assert all([await limits.reset_email_allowed(ACCOUNT) for _ in range(5)])
                server.start()

                async def throttled_again() -> bool:
                    return await attempt(limits, next(_addresses)) == "login_throttled"

                await wait_until(
                    throttled_again,
                    within=settings.redis_backoff_max_seconds,
                    what="the limits to return to Redis",
                )
    finally:
        server.cleanup()
    messages = [r.getMessage() for r in caplog.records if r.name == AUTH_LIMITS_LOGGER]
    assert messages == [
        "Auth limits (failed logins, reset e-mails) off while Redis is unavailable; "
        "the per-address auth tier still applies",
        "Auth limits (failed logins, reset e-mails) back on Redis",
    ]
