"""The real app: create_app() installs the limiter and its lifespan provides the RedisService."""

from pathlib import Path

import httpx
import redis

from app.config.rate_limits import DEFAULT_TIERS, RateLimitTier
from app.main import create_app
from tests.conftest import make_settings
from tests.middleware.rate_limiter.helpers import REDIS_TIMEOUTS


async def test_real_app_limits_api_jobs_through_redis(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    tiers = {**DEFAULT_TIERS, "read": RateLimitTier(capacity=2, refill=1, period_seconds=3600)}
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        rate_limit_enabled=True,
        rate_limit_tiers=tiers,
        **REDIS_TIMEOUTS,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            responses = [await client.get("/api/jobs") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["X-RateLimit-Remaining"] == "1"
    assert responses[2].json()["error"]["code"] == "rate_limited"
    store = redis.Redis.from_url(redis_url)
    assert store.exists("rl:{read:ip:127.0.0.1}") == 1
    store.close()
