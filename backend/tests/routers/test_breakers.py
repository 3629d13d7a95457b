"""Admin breaker routes: two app instances sharing one Redis, Gemini played by the fake upstream."""

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.main import create_app
from app.security import decode_access_token
from tests.conftest import make_settings
from tests.support.factories import admin_token, auth, candidate_token
from tests.support.fake_upstream import FakeUpstream
from tests.support.wait import wait_until

BODY = {"topic": "Kubernetes", "count": 2, "difficulty": "easy"}


class Instance:
    """One web app instance (its own breakers, as in its own process) and a client for it."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.token = ""

    async def generate(self) -> httpx.Response:
        return await self.client.post("/api/admin/ai-generate", headers=auth(self.token), json=BODY)

    async def breakers(self) -> dict[str, dict[str, Any]]:
        response = await self.client.get("/api/admin/breakers", headers=auth(self.token))
        assert response.status_code == 200, response.text
        return {item["name"]: item for item in response.json()["items"]}

    async def set_state(self, name: str, state: str) -> httpx.Response:
        return await self.client.put(
            f"/api/admin/breakers/{name}", headers=auth(self.token), json={"state": state}
        )


@pytest.fixture
async def pair(
    tmp_path: Path, database_url: str, redis_url: str, upstream: FakeUpstream
) -> AsyncIterator[tuple[Instance, Instance]]:
    """Two instances of the web app on one Redis and one database, both with an admin token."""
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        ai_backend="gemini",
        gemini_api_key=SecretStr(upstream.api_key),
        gemini_base_url=upstream.url,
        gemini_timeout_seconds=2.0,
    )
    first, second = create_app(settings), create_app(settings)
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first), base_url="http://testserver"
        ) as first_client,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=second), base_url="http://testserver"
        ) as second_client,
    ):
        a, b = Instance(first, first_client), Instance(second, second_client)
        a.token = b.token = await admin_token(first, first_client)
        yield a, b


async def test_admin_reads_every_breaker_with_its_policy(pair: tuple[Instance, Instance]) -> None:
    a, _ = pair

    breakers = await a.breakers()

    assert sorted(breakers) == ["cloudinary", "gemini", "pinecone", "s3"]
    assert breakers["gemini"] == {
        "name": "gemini",
        "state": "closed",
        "retry_after": 0.0,
        "shared": True,
        "failure_threshold": 5,
        "recovery_timeout": 60.0,  # the plan's default deviation for Gemini
        "success_threshold": 2,
        "half_open_max_calls": 1,
    }
    assert breakers["s3"]["recovery_timeout"] == 30.0


async def test_forced_open_fails_fast_everywhere_and_auto_restores(
    pair: tuple[Instance, Instance], upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    admin_id = decode_access_token(a.app.state.settings, a.token).user_id

    with caplog.at_level(logging.INFO, logger="app.routers.breakers"):
        forced = await a.set_state("gemini", "forced_open")

    assert forced.status_code == 200, forced.text
    assert forced.json()["state"] == "forced_open"
    audit = [r.__dict__ for r in caplog.records if r.__dict__.get("event") == "breaker_state_set"]
    assert [(r["breaker"], r["from_state"], r["to_state"], r["admin_user_id"]) for r in audit] == [
        ("gemini", "closed", "forced_open", admin_id)
    ]

    rejected = await a.generate()
    assert rejected.status_code == 503
    assert rejected.json()["error"]["code"] == "circuit_open"
    assert rejected.json()["error"]["service"] == "gemini"
    assert rejected.headers["retry-after"] == "60"  # forced open: the breaker's recovery time

    # The other instance learns the operator state through Redis.
    async def forced_on_b() -> bool:
        return bool((await b.breakers())["gemini"]["state"] == "forced_open")

    await wait_until(forced_on_b, within=1.0, what="the second instance to see forced_open")
    assert (await b.generate()).json()["error"]["code"] == "circuit_open"
    assert upstream.calls() == 0

    restored = await b.set_state("gemini", "auto")
    assert restored.status_code == 200, restored.text
    assert restored.json()["state"] == "closed"

    async def closed_on_a() -> bool:
        return bool((await a.breakers())["gemini"]["state"] == "closed")

    await wait_until(closed_on_a, within=1.0, what="the first instance to see closed")
    ok = await a.generate()
    assert ok.status_code == 200, ok.text
    assert upstream.calls() == 1


async def test_disabled_lets_calls_through_even_when_they_fail(
    pair: tuple[Instance, Instance], upstream: FakeUpstream
) -> None:
    a, _ = pair
    assert (await a.set_state("gemini", "disabled")).json()["state"] == "disabled"
    upstream.set_mode("503")

    # Twice the failure threshold: a breaker in automatic control would have opened.
    codes = [(await a.generate()).json()["error"]["code"] for _ in range(10)]

    assert codes == ["upstream_unavailable"] * 10
    assert upstream.calls() == 10
    assert (await a.breakers())["gemini"]["state"] == "disabled"


async def test_unknown_breaker_and_bad_bodies(pair: tuple[Instance, Instance]) -> None:
    a, _ = pair

    missing = await a.set_state("supabase_storage", "forced_open")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"

    for body in ({"state": "open"}, {"state": "auto", "why": "test"}, {}):
        response = await a.client.put(
            "/api/admin/breakers/gemini", headers=auth(a.token), json=body
        )
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "validation_error"
    assert (await a.breakers())["gemini"]["state"] == "closed"


async def test_candidates_and_anonymous_callers_are_refused(
    pair: tuple[Instance, Instance],
) -> None:
    a, _ = pair
    token = await candidate_token(a.client)

    listed = await a.client.get("/api/admin/breakers", headers=auth(token))
    changed = await a.client.put(
        "/api/admin/breakers/gemini", headers=auth(token), json={"state": "disabled"}
    )
    anonymous = await a.client.put("/api/admin/breakers/gemini", json={"state": "disabled"})

    assert (listed.status_code, changed.status_code, anonymous.status_code) == (403, 403, 401)
    assert changed.json()["error"]["code"] == "forbidden"
    assert (await a.breakers())["gemini"]["state"] == "closed"
