"""The web app calling Gemini (the fake server process) through its breaker, with Redis stopped."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.main import create_app
from tests.conftest import make_settings
from tests.support.factories import admin_token, auth
from tests.support.fake_upstream import FakeUpstream
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.slow

BODY = {"topic": "Kubernetes", "count": 2, "difficulty": "easy"}


@pytest.fixture
async def app_without_redis(
    tmp_path: Path, database_url: str, redis_server: RedisServer, upstream: FakeUpstream
) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        redis_url=redis_server.url,
        ai_backend="gemini",
        gemini_api_key=SecretStr(upstream.api_key),
        gemini_base_url=upstream.url,
        gemini_timeout_seconds=1.0,
    )
    redis_server.stop()
    application = create_app(settings)
    try:
        async with application.router.lifespan_context(application):
            yield application
    finally:
        redis_server.start()


async def test_gemini_outage_becomes_503_then_circuit_open(
    app_without_redis: FastAPI, upstream: FakeUpstream
) -> None:
    transport = httpx.ASGITransport(app=app_without_redis)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        token = await admin_token(app_without_redis, client)

        ok = await client.post("/api/admin/ai-generate", headers=auth(token), json=BODY)
        assert ok.status_code == 200, ok.text
        assert [q["text"] for q in ok.json()["questions"]] == [
            "easy question 1 about Kubernetes?",
            "easy question 2 about Kubernetes?",
        ]

        upstream.set_mode("503")
        statuses = []
        for _ in range(20):
            response = await client.post("/api/admin/ai-generate", headers=auth(token), json=BODY)
            statuses.append((response.status_code, response.json()["error"]["code"]))
            if statuses[-1][1] == "circuit_open":
                break

        assert statuses[0] == (503, "upstream_unavailable")
        assert statuses[-1] == (503, "circuit_open")
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["service"] == "gemini"
        assert upstream.calls() == 1 + 5  # one success, then the failure threshold
        assert app_without_redis.state.resources.breakers.states()["gemini"]["state"] == "open"
        assert app_without_redis.state.resources.breakers.states()["gemini"]["shared"] is False
