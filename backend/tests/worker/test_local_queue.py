"""QUEUE_BACKEND=local: the web app runs the worker handlers in-process, with sqsd's retries."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.main import create_app
from app.models import EmailOutbox, FailedJob, ProcessedJob
from tests.conftest import make_settings
from tests.support.factories import PASSWORD, auth, register_candidate
from tests.support.redis_server import free_port
from tests.support.resume_files import RESUME_TEXT
from tests.support.wait import wait_until
from tests.worker.helpers import count

# Local jobs run in the background of the app's own process: a few seconds of work and retries.
JOB_SECONDS = 20.0


@asynccontextmanager
async def local_app(tmp_path: Path, database_url: str, **overrides: Any) -> AsyncIterator[FastAPI]:
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        queue_backend="local",
        local_queue_retry_delay_seconds=0.05,
        **overrides,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def web(tmp_path: Path, database_url: str) -> AsyncIterator[FastAPI]:
    async with local_app(tmp_path, database_url) as application:
        yield application


@pytest.fixture
async def web_client(web: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
        yield client


async def test_upload_is_parsed_in_process(web: FastAPI, web_client: httpx.AsyncClient) -> None:
    token = (await register_candidate(web_client))["access_token"]
    files = {"file": ("cv.txt", RESUME_TEXT.encode(), "text/plain")}
    response = await web_client.post("/api/profile/resume", files=files, headers=auth(token))
    assert response.status_code == 202
    assert response.json()["status"] == "queued"

    async def parsed() -> bool:
        status = await web_client.get("/api/profile/resume-status", headers=auth(token))
        return bool(status.json()["status"] == "parsed")

    await wait_until(parsed, within=JOB_SECONDS, what="parsed")
    profile = (await web_client.get("/api/profile", headers=auth(token))).json()
    assert "Kubernetes" in profile["skills"] and profile["experience_years"] == 6

    async def indexed() -> bool:
        return await count(web, ProcessedJob, ProcessedJob.task == "vector-index") == 1

    await wait_until(indexed, within=JOB_SECONDS, what="indexed")
    assert (await web.state.resources.vector_index.query("kubernetes fastapi", 1))[0][0] == profile[
        "id"
    ]


async def test_forgot_password_emails_a_reset_link_only_to_real_accounts(
    web: FastAPI, web_client: httpx.AsyncClient
) -> None:
    await register_candidate(web_client, email="known@example.com")
    known = await web_client.post("/api/auth/forgot-password", json={"email": "Known@Example.com"})
    unknown = await web_client.post(
        "/api/auth/forgot-password", json={"email": "nobody@example.com"}
    )
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()

    async def emailed() -> bool:
        return await count(web, EmailOutbox) == 1

    await wait_until(emailed, within=JOB_SECONDS, what="emailed")
    async with web.state.resources.database.sessionmaker() as session:
        email = (await session.scalars(select(EmailOutbox))).one()
    assert (email.recipient, email.kind, email.status) == (
        "known@example.com",
        "password_reset",
        "logged",
    )
    assert email.body is not None
    token = email.body.split("?token=", 1)[1].split()[0]
    reset = await web_client.post(
        "/api/auth/reset-password", json={"token": token, "new_password": "N3w-Password!x"}
    )
    assert reset.status_code == 200, reset.text
    login = await web_client.post(
        "/api/auth/login", json={"email": "known@example.com", "password": PASSWORD}
    )
    assert login.status_code == 401


async def test_a_failing_local_job_is_retried_then_recorded(
    tmp_path: Path, database_url: str
) -> None:
    async with local_app(
        tmp_path,
        database_url,
        ai_backend="gemini",
        gemini_api_key="test-key",
        gemini_base_url=f"http://127.0.0.1:{free_port()}",
    ) as web:
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            token = (await register_candidate(client))["access_token"]
            files = {"file": ("cv.txt", RESUME_TEXT.encode(), "text/plain")}
            response = await client.post("/api/profile/resume", files=files, headers=auth(token))
            assert response.status_code == 202

            async def gave_up() -> bool:
                return await count(web, FailedJob) == 1

            await wait_until(gave_up, within=JOB_SECONDS, what="gave up")
            status = (await client.get("/api/profile/resume-status", headers=auth(token))).json()
        async with web.state.resources.database.sessionmaker() as session:
            failed = (await session.scalars(select(FailedJob))).one()
        assert (
            failed.dead_lettered
            and failed.receive_count == web.state.settings.worker_max_receive_count
        )
        assert failed.task == "resume-parse"
        assert status["status"] == "failed"
        assert await count(web, ProcessedJob) == 0
