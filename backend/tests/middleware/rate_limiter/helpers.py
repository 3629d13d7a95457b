"""Helpers for the rate limiter tests: settings, tokens, the in-process app, uvicorn processes."""

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from starlette.applications import Starlette

from app.config import Settings
from app.config.rate_limits import DEFAULT_TIERS, RateLimitTier
from tests.middleware.rate_limiter.limiter_app import build_limiter_app
from tests.support.wait import LOADED_MACHINE_MARGIN

JWT_SECRET = "rate-limit-tests-" + "k" * 40

# Exact counts need every decision to reach Redis: with the default 0.25 s timeouts, one stall of
# a loaded 2-core machine sends a request to the in-process fallback. The outage tests stop the
# server, which fails calls at once whatever these are.
REDIS_TIMEOUTS: dict[str, float] = {
    "redis_socket_timeout_seconds": LOADED_MACHINE_MARGIN,
    "redis_connect_timeout_seconds": LOADED_MACHINE_MARGIN,
}


def limiter_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for the limiter tests: a fixed JWT secret and tiers overridden by name."""
    tiers: dict[str, RateLimitTier] = dict(DEFAULT_TIERS)
    tiers.update(overrides.pop("tiers", {}))
    values: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "data_dir": tmp_path,
        "rate_limit_tiers": tiers,
        "redis_backoff_seconds": 0.1,
        "redis_backoff_max_seconds": 0.2,
        **REDIS_TIMEOUTS,
    }
    values.update(overrides)
    return Settings(**values)


def make_token(sub: str, *, key: str = JWT_SECRET, expires_in: int = 600, **extra: Any) -> str:
    """An HS256 token; with the wrong key or a past expiry, a forgery the limiter must reject."""
    now = datetime.now(UTC)
    claims = {
        "sub": sub,
        "role": "candidate",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=expires_in)).timestamp()),
        **extra,
    }
    return jwt.encode(claims, key, algorithm="HS256")


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The limiter test app with its lifespan run, and a client talking to it in-process."""
    app = build_limiter_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


def server_env(
    tmp_path: Path, redis_url: str, tiers: Mapping[str, RateLimitTier], **extra: str
) -> dict[str, str]:
    """Environment for UvicornProcesses running the limiter test app."""
    return {
        "JWT_SECRET": JWT_SECRET,
        "DATA_DIR": str(tmp_path),
        "REDIS_URL": redis_url,
        **{name.upper(): str(value) for name, value in REDIS_TIMEOUTS.items()},
        "RATE_LIMIT_TIERS": json.dumps(
            {
                **{k: v.model_dump() for k, v in DEFAULT_TIERS.items()},
                **{k: v.model_dump() for k, v in tiers.items()},
            }
        ),
        **extra,
    }
