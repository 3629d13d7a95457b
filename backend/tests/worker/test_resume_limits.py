"""A resume that would burn minutes of CPU, through the embedded local queue of a real web process
(uvicorn, QUEUE_BACKEND=local): the parse runs in a limited child process, the web process keeps
answering while it burns, and the job ends as a permanent, clearly reported failure."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.domain.resume_sandbox import TOO_COMPLEX
from tests.conftest import TEST_JWT_SECRET
from tests.support.database import asyncpg_dsn
from tests.support.factories import auth, candidate_token
from tests.support.resume_files import RESUME_TEXT, costly_pdf_bytes, pdf_bytes
from tests.support.uvicorn_processes import UvicornProcesses
from tests.support.wait import LOADED_MACHINE_MARGIN, wait_until

pytestmark = pytest.mark.slow

CPU_SECONDS = 6
# The parse's CPU budget, plus start-up, a loaded machine and the follow-up jobs.
JOB_SECONDS = 4.0 * CPU_SECONDS
PROBES = 20


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[str]:
    env = {
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "server-data"),
        "QUEUE_BACKEND": "local",
        "LOCAL_QUEUE_RETRY_DELAY_SECONDS": "0.05",
        "RATE_LIMIT_ENABLED": "false",
        "CACHE_ENABLED": "false",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "RESUME_PARSE_CPU_SECONDS": str(CPU_SECONDS),
        "LOG_LEVEL": "WARNING",
    }
    with UvicornProcesses("app.main:app", 1, env) as processes:
        yield processes.urls[0]


async def upload(client: httpx.AsyncClient, token: str, data: bytes) -> None:
    files = {"file": ("resume.pdf", data, "application/pdf")}
    response = await client.post("/api/profile/resume", files=files, headers=auth(token))
    assert response.status_code == 202, response.text


async def resume_status(client: httpx.AsyncClient, token: str) -> dict[str, str | None]:
    response = await client.get("/api/profile/resume-status", headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, str | None] = response.json()
    return body


async def test_a_costly_pdf_fails_for_good_without_stalling_the_web_process(
    server: str, postgres_url: str
) -> None:
    timeout = httpx.Timeout(LOADED_MACHINE_MARGIN)
    async with httpx.AsyncClient(base_url=server, timeout=timeout) as client:
        token = await candidate_token(client)
        await upload(client, token, costly_pdf_bytes())

        async def status_is(wanted: str) -> bool:
            return (await resume_status(client, token))["status"] == wanted

        await wait_until(lambda: status_is("processing"), within=JOB_SECONDS, what="processing")
        # While the parse burns its CPU budget, the web process answers at once.
        probes = await asyncio.gather(*(client.get("/health") for _ in range(PROBES)))
        jobs = await client.get("/api/jobs")
        still_parsing = await status_is("processing")
        assert [probe.status_code for probe in probes] == [200] * PROBES
        assert jobs.status_code == 200
        assert still_parsing

        await wait_until(lambda: status_is("failed"), within=JOB_SECONDS, what="failed")
        status = await resume_status(client, token)
        assert status["error"] == TOO_COMPLEX
        notifications = (await client.get("/api/notifications", headers=auth(token))).json()
        assert [item["kind"] for item in notifications["items"]] == ["resume_failed"]

        # Once, for good: one rejected job, never retried or dead-lettered.
        connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            failures = await connection.fetch(
                "SELECT reason, receive_count, dead_lettered FROM failed_jobs"
            )
            processed = await connection.fetch("SELECT task, status FROM processed_jobs")
        finally:
            await connection.close()
        assert [tuple(row) for row in failures] == [(TOO_COMPLEX, 1, False)]
        assert [tuple(row) for row in processed] == [("resume-parse", "rejected")]

        # The killed parser left nothing broken: the next upload parses.
        await upload(client, token, pdf_bytes(RESUME_TEXT))
        await wait_until(lambda: status_is("parsed"), within=JOB_SECONDS, what="parsed")
        profile = (await client.get("/api/profile", headers=auth(token))).json()
        assert "Kubernetes" in profile["skills"] and profile["experience_years"] == 6
