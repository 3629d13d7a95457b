"""The embedded default (SQLite, QUEUE_BACKEND=local) runs the worker handlers too."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx

from app.main import create_app
from app.models import EmailOutbox, ProcessedJob
from app.worker_app import create_worker_app
from tests.conftest import make_settings
from tests.support.database import migrate
from tests.support.factories import auth, register_candidate
from tests.support.resume_files import RESUME_TEXT, docx_bytes
from tests.support.wait import wait_until
from tests.worker.helpers import count, post_cron, post_job

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def test_resume_parsing_email_and_cron_on_sqlite(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, local_queue_retry_delay_seconds=0.05)
    assert settings.sqlalchemy_url.startswith("sqlite") and settings.queue_backend == "local"
    await asyncio.to_thread(migrate, settings)

    web = create_app(settings)
    async with (
        web.router.lifespan_context(web),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://web") as client,
    ):
        token = (await register_candidate(client))["access_token"]
        files = {"file": ("cv.docx", docx_bytes(RESUME_TEXT), DOCX)}
        response = await client.post("/api/profile/resume", files=files, headers=auth(token))
        assert response.status_code == 202

        async def parsed() -> bool:
            status = await client.get("/api/profile/resume-status", headers=auth(token))
            return bool(status.json()["status"] == "parsed")

        await wait_until(parsed, within=20, what="the resume to be parsed")
        profile = (await client.get("/api/profile", headers=auth(token))).json()
        assert profile["skills"][:3] == ["Python", "PostgreSQL", "FastAPI"]

    worker = create_worker_app(settings)
    async with (
        worker.router.lifespan_context(worker),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=worker, client=("127.0.0.1", 9)),
            base_url="http://worker",
        ) as client,
    ):
        email = {"to": "a@example.com", "subject": "s", "body": "b"}
        responses = await asyncio.gather(
            *(post_job(client, "email", email, job_id="same-job") for _ in range(4))
        )
        assert sorted(r.json()["status"] for r in responses) == ["done"] + ["duplicate"] * 3
        assert await count(worker, EmailOutbox) == 1
        scheduled = datetime(2026, 1, 1, 2, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for expected in ("done", "duplicate"):
            report = await post_cron(client, "generate-reports", scheduled)
            assert report.json()["status"] == expected
        assert await count(worker, ProcessedJob) == 4  # resume, vector index, email, report
