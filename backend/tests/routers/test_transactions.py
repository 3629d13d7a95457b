"""The request's commit happens before the response, and failures leak nothing."""

import time
from pathlib import Path

import asyncpg
import httpx
from fastapi import FastAPI

from app.main import create_app
from tests.conftest import make_settings
from tests.support.apps import AppFactory, client_for
from tests.support.database import asyncpg_dsn, tables_locked
from tests.support.factories import auth, candidate_token, create_job
from tests.support.wait import LOADED_MACHINE_MARGIN

FAIL_AT_COMMIT = """
CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'secret-detail: refused at commit on host db.internal'; END $$;
CREATE CONSTRAINT TRIGGER refuse_profile_commit AFTER UPDATE ON candidate_profiles
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();
"""
CLEANUP = """
DROP TRIGGER IF EXISTS refuse_profile_commit ON candidate_profiles;
DROP FUNCTION IF EXISTS refuse_at_commit();
"""


async def test_a_failing_commit_is_an_error_response_and_writes_nothing(
    app: FastAPI, postgres_url: str
) -> None:
    # Like a real server: the app's 500 response is what the client sees, not the exception.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    token = await candidate_token(client)
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        # A deferred constraint trigger fails only at COMMIT, after the route body succeeded.
        await connection.execute(FAIL_AT_COMMIT)
        response = await client.patch(
            "/api/profile", headers=auth(token), json={"summary": "changed"}
        )
    finally:
        await connection.execute(CLEANUP)
        await connection.close()
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal_error", "message": "An internal error occurred."}
    }
    for leak in ("secret-detail", "db.internal", "UPDATE", "Traceback"):
        assert leak not in response.text
    profile = (await client.get("/api/profile", headers=auth(token))).json()
    await client.aclose()
    assert profile["summary"] is None


async def test_an_exhausted_pool_is_a_503_with_retry_after(
    tmp_path: Path, postgres_url: str, database_url: str
) -> None:
    # The app's own pool: a direct connection in every run (behind a pooler there is none).
    settings = make_settings(
        tmp_path,
        database_url=postgres_url,
        use_external_pooler=False,
        db_pool_size=1,
        db_pool_timeout_seconds=0.2,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        token = await candidate_token(client)
        # Hold the pool's only connection, as a burst of slow requests would.
        async with app.state.resources.database.engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            response = await client.get("/api/profile", headers=auth(token))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "service_busy"
        assert (await client.get("/api/profile", headers=auth(token))).status_code == 200


async def test_an_exhausted_read_pool_is_a_503_with_retry_after(app_with: AppFactory) -> None:
    async with app_with(db_read_pool_size=1, db_pool_timeout_seconds=0.2) as app:
        await create_job(app)
        read_pool = app.state.resources.database.read_pool
        async with client_for(app) as client:
            # Hold the read pool's only connection, as a burst of slow listings would.
            async with read_pool.acquire():
                started = time.monotonic()
                busy = await client.get("/api/jobs")
                waited = time.monotonic() - started
            after = await client.get("/api/jobs")
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "service_busy"
    assert waited < 0.2 + LOADED_MACHINE_MARGIN
    assert after.status_code == 200


async def test_a_lock_wait_ends_at_the_lock_timeout_and_spares_other_routes(
    app_with: AppFactory, postgres_url: str
) -> None:
    # The statement timeout stays at its 30 s default: only the lock timeout can end the wait.
    async with app_with(db_lock_timeout_ms=300) as app, client_for(app) as client:
        token = await candidate_token(client)
        async with tables_locked(postgres_url, "candidate_profiles"):
            started = time.monotonic()
            blocked = await client.patch(
                "/api/profile", headers=auth(token), json={"summary": "blocked"}
            )
            waited = time.monotonic() - started
            unrelated = await client.get("/api/notifications", headers=auth(token))
        after = await client.patch("/api/profile", headers=auth(token), json={"summary": "after"})
    assert blocked.status_code == 504
    assert blocked.headers["retry-after"] == "2"
    assert blocked.json()["error"]["code"] == "database_timeout"
    assert waited < 0.3 + LOADED_MACHINE_MARGIN
    assert unrelated.status_code == 200
    assert after.status_code == 200


async def test_hot_reads_end_at_their_own_shorter_budget(
    app_with: AppFactory, postgres_url: str
) -> None:
    # Statement and lock timeouts at 30 s: only the read budget can end the wait in time.
    async with (
        app_with(db_read_statement_timeout_ms=300, db_lock_timeout_ms=30_000) as app,
        client_for(app) as client,
    ):
        job = await create_job(app)
        async with tables_locked(postgres_url, "jobs"):
            started = time.monotonic()
            listing = await client.get("/api/jobs")
            detail = await client.get(f"/api/jobs/{job.id}")
            waited = time.monotonic() - started
        after = await client.get("/api/jobs")
    for response in (listing, detail):
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "database_timeout"
    assert waited < 2 * 0.3 + LOADED_MACHINE_MARGIN
    assert after.status_code == 200
