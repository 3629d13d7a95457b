"""The cache wired into the app (in-process, real Postgres and Redis): freshness, ETags, faults."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.domain.caching import AI_QUESTIONS, JOB_LISTINGS, JOBS_TAG
from app.middleware.cache_invalidation import CacheInvalidationMiddleware
from app.services.cache import Cache, content_etag, invalidate_on_commit
from tests.support.factories import admin_token, auth, candidate_token, create_job, create_test
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_until


def _counter(name: str, namespace: str) -> float:
    return REGISTRY.get_sample_value(name, {"namespace": namespace}) or 0.0


async def test_listing_and_detail_follow_admin_writes(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    job = await create_job(app, title="Python Developer")
    token = await admin_token(app, client)
    assert (await client.get("/api/jobs")).json()["items"][0]["title"] == "Python Developer"
    assert (await client.get(f"/api/jobs/{job.id}")).json()["title"] == "Python Developer"

    edited = await client.patch(
        f"/api/admin/jobs/{job.id}", headers=auth(token), json={"title": "Go Developer"}
    )
    assert edited.status_code == 200
    assert (await client.get("/api/jobs")).json()["items"][0]["title"] == "Go Developer"
    assert (await client.get(f"/api/jobs/{job.id}")).json()["title"] == "Go Developer"

    created = await client.post(
        "/api/admin/jobs",
        headers=auth(token),
        json={
            "title": "Rust Developer",
            "company": "Acme",
            "location": "Remote",
            "job_type": "Full Time",
            "description": "Systems work.",
            "skills": ["rust"],
        },
    )
    assert created.status_code == 201
    assert [item["title"] for item in (await client.get("/api/jobs")).json()["items"]] == [
        "Rust Developer",
        "Go Developer",
    ]
    assert (
        await client.delete(f"/api/admin/jobs/{job.id}", headers=auth(token))
    ).status_code == 204
    assert [item["title"] for item in (await client.get("/api/jobs")).json()["items"]] == [
        "Rust Developer"
    ]
    assert (await client.get(f"/api/jobs/{job.id}")).status_code == 404


async def test_failed_write_invalidates_nothing(client: httpx.AsyncClient, app: FastAPI) -> None:
    token = await admin_token(app, client)
    before = _counter("hiringpro_cache_invalidations_total", "job_listings")
    missing = await client.patch("/api/admin/jobs/999", headers=auth(token), json={"title": "x"})
    assert missing.status_code == 404
    assert _counter("hiringpro_cache_invalidations_total", "job_listings") == before


async def test_etag_is_the_content_hash_and_if_none_match_gets_304(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await create_job(app)
    first = await client.get("/api/jobs", params={"page_size": 5})
    etag = first.headers["etag"]
    assert etag == content_etag(first.content)  # same bytes -> same tag in every process
    second = await client.get("/api/jobs", params={"page_size": 5})
    assert second.headers["etag"] == etag and second.content == first.content

    not_modified = await client.get(
        "/api/jobs", params={"page_size": 5}, headers={"If-None-Match": etag}
    )
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    listed = await client.get(
        "/api/jobs", params={"page_size": 5}, headers={"If-None-Match": f'"other", W/{etag}'}
    )
    assert listed.status_code == 304
    stale = await client.get(
        "/api/jobs", params={"page_size": 5}, headers={"If-None-Match": '"other"'}
    )
    assert stale.status_code == 200 and stale.content == first.content

    token = await admin_token(app, client)
    await create_job(app, title="Another")  # written behind the API's back: the entry stays
    await client.post(
        "/api/admin/jobs",
        headers=auth(token),
        json={
            "title": "Third",
            "company": "Acme",
            "location": "Remote",
            "job_type": "Full Time",
            "description": "d",
            "skills": [],
        },
    )
    changed = await client.get(
        "/api/jobs", params={"page_size": 5}, headers={"If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert len(changed.json()["items"]) == 3


async def test_search_results_follow_profile_changes(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = auth(await admin_token(app, client))
    assert (
        await client.get("/api/admin/candidates/search", params={"q": "kubernetes"}, headers=admin)
    ).json()["items"] == []
    candidate = await candidate_token(client)
    patched = await client.patch(
        "/api/profile", headers=auth(candidate), json={"skills": ["kubernetes"]}
    )
    assert patched.status_code == 200
    found = (
        await client.get("/api/admin/candidates/search", params={"q": "kubernetes"}, headers=admin)
    ).json()
    assert [item["skills"] for item in found["items"]] == [["kubernetes"]]


async def test_available_tests_follow_test_creation(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await create_test(app)
    candidate = auth(await candidate_token(client))
    assert len((await client.get("/api/tests/available", headers=candidate)).json()) == 1
    admin = auth(await admin_token(app, client))
    created = await client.post(
        "/api/admin/ai-generate",
        headers=admin,
        json={"topic": "sql joins", "count": 3, "create_test": True, "title": "SQL"},
    )
    assert created.status_code == 200, created.text
    titles = [
        test["title"]
        for test in (await client.get("/api/tests/available", headers=candidate)).json()
    ]
    assert titles == ["Python basics", "SQL"]
    started = await client.post(
        "/api/tests/start", headers=candidate, json={"test_id": created.json()["test_id"]}
    )
    assert len(started.json()["questions"]) == 3


async def test_ai_responses_are_cached_by_input(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = auth(await admin_token(app, client))
    before = _counter("hiringpro_cache_recomputes_total", AI_QUESTIONS.name)
    body = {"topic": "python generators", "count": 2}
    first = (await client.post("/api/admin/ai-generate", headers=admin, json=body)).json()
    second = (await client.post("/api/admin/ai-generate", headers=admin, json=body)).json()
    other = (
        await client.post("/api/admin/ai-generate", headers=admin, json={**body, "count": 3})
    ).json()
    assert first["questions"] == second["questions"]
    assert len(other["questions"]) == 3
    assert _counter("hiringpro_cache_recomputes_total", AI_QUESTIONS.name) == before + 2


async def test_per_user_routes_never_serve_another_users_data(client: httpx.AsyncClient) -> None:
    alice = auth(await candidate_token(client))
    bob = auth(await candidate_token(client))
    await client.patch("/api/profile", headers=alice, json={"summary": "alice"})
    await client.patch("/api/profile", headers=bob, json={"summary": "bob"})
    for _ in range(3):
        assert (await client.get("/api/profile", headers=alice)).json()["summary"] == "alice"
        assert (await client.get("/api/profile", headers=bob)).json()["summary"] == "bob"
        # Shared entries carry no user data: both see the same available tests.
        assert (await client.get("/api/tests/available", headers=alice)).content == (
            await client.get("/api/tests/available", headers=bob)
        ).content


@pytest.mark.slow
async def test_redis_stopped_responses_stay_correct(
    client: httpx.AsyncClient, app: FastAPI, redis_server: RedisServer
) -> None:
    job = await create_job(app, title="Before")
    await create_test(app)
    admin = auth(await admin_token(app, client))
    candidate = auth(await candidate_token(client))
    reads = [
        ("/api/jobs", {}),
        (f"/api/jobs/{job.id}", {}),
        ("/api/tests/available", candidate),
        ("/api/admin/dashboard", admin),
        ("/api/admin/candidates/search?q=python", admin),
    ]
    for path, headers in reads:
        assert (await client.get(path, headers=headers)).status_code == 200
    redis_server.stop()
    for path, headers in reads:
        assert (await client.get(path, headers=headers)).status_code == 200, path
    edited = await client.patch(
        f"/api/admin/jobs/{job.id}", headers=admin, json={"title": "During"}
    )
    assert edited.status_code == 200
    assert (await client.get("/api/jobs")).json()["items"][0]["title"] == "During"
    assert (await client.get(f"/api/jobs/{job.id}")).json()["title"] == "During"
    redis_server.start()
    assert app.state.resources.redis.client is not None
    for path, headers in reads:
        assert (await client.get(path, headers=headers)).status_code == 200, path
    assert (await client.get("/api/jobs")).json()["items"][0]["title"] == "During"


async def test_commit_after_the_response_still_invalidates(app: FastAPI) -> None:
    """A background task started by a request commits after its response: bumped at once."""
    cache: Cache = app.state.resources.cache
    release = asyncio.Event()
    background: list[asyncio.Task[None]] = []

    async def commit_later() -> None:
        await release.wait()
        async with app.state.resources.database.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
            invalidate_on_commit(session, JOBS_TAG)
            await session.commit()

    async def route(request: Request) -> PlainTextResponse:
        background.append(asyncio.create_task(commit_later()))  # inherits the request context
        return PlainTextResponse("accepted")

    probe = Starlette(routes=[Route("/later", route)])
    probe.state.resources = app.state.resources
    probe.add_middleware(CacheInvalidationMiddleware)
    calls: list[int] = []

    async def compute() -> int:
        calls.append(1)
        return len(calls)

    assert await cache.get_or_compute(JOB_LISTINGS, "probe", compute) == 1
    transport = httpx.ASGITransport(app=probe)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as http:
        assert (await http.get("/later")).status_code == 200
    release.set()
    await asyncio.gather(*background)

    async def recomputed() -> bool:
        value: int = await cache.get_or_compute(JOB_LISTINGS, "probe", compute)
        return value == 2

    # The bump is one EVALSHA sent by a task of its own: bounded by the Redis read timeout.
    await wait_until(
        recomputed,
        within=app.state.settings.redis_socket_timeout_seconds,
        what="the bump of a commit made after the response",
    )
