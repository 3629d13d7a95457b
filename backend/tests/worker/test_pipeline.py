"""End to end through real processes: web app -> SQS (moto) -> local sqsd -> worker app."""

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from app.main import create_app
from app.models import FailedJob, ProcessedJob
from tests.support.factories import auth, candidate_token
from tests.support.moto_server import MotoServer
from tests.support.redis_server import free_port
from tests.support.resume_files import RESUME_TEXT, pdf_bytes
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import QueuePair, drain, sqs_client
from tests.support.wait import wait_until
from tests.worker.helpers import count
from tests.worker.processes import worker_env, worker_tier

pytestmark = pytest.mark.slow


# Through moto, two processes and the retries sqsd makes: up to a minute on a loaded machine.
PIPELINE_SECONDS = 60.0


async def upload_resume(client: httpx.AsyncClient, token: str) -> httpx.Response:
    files = {"file": ("jordan.pdf", pdf_bytes(RESUME_TEXT), "application/pdf")}
    return await client.post("/api/profile/resume", files=files, headers=auth(token))


async def test_uploaded_resume_is_parsed_by_the_worker_tier(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    settings = sqs_settings(tmp_path, database_url, moto, queues)
    web = create_app(settings)
    with worker_tier(worker_env(settings, moto, queues), queues, tmp_path):
        async with web.router.lifespan_context(web):
            transport = httpx.ASGITransport(app=web)
            async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
                token = await candidate_token(client)
                response = await upload_resume(client, token)
                assert response.status_code == 202, response.text
                assert response.json()["status"] == "queued"

                async def parsed() -> bool:
                    status = await client.get("/api/profile/resume-status", headers=auth(token))
                    return bool(status.json()["status"] == "parsed")

                await wait_until(parsed, within=PIPELINE_SECONDS, what="parsed", interval=0.2)
                profile = (await client.get("/api/profile", headers=auth(token))).json()
                assert profile["skills"] == [
                    "Python",
                    "PostgreSQL",
                    "FastAPI",
                    "Docker",
                    "Kubernetes",
                    "AWS",
                    "REST",
                ]
                assert profile["experience_years"] == 6
                notifications = (await client.get("/api/notifications", headers=auth(token))).json()
                assert [item["kind"] for item in notifications["items"]] == ["resume_parsed"]

                # The follow-up vector-index job went through the queue and the daemon too.
                async def indexed() -> bool:
                    return await count(web, ProcessedJob, ProcessedJob.task == "vector-index") == 1

                await wait_until(indexed, within=PIPELINE_SECONDS, what="indexed", interval=0.2)
    assert await count(web, FailedJob) == 0


async def test_a_job_failing_three_times_ends_in_the_dead_letter_queue_intact(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    settings = sqs_settings(tmp_path, database_url, moto, queues)
    web = create_app(settings)
    # The worker's AI service is down (a closed port): every attempt fails with 503.
    env = worker_env(
        settings,
        moto,
        queues,
        AI_BACKEND="gemini",
        GEMINI_API_KEY="test-key",
        GEMINI_BASE_URL=f"http://127.0.0.1:{free_port()}",
    )
    sqs = sqs_client(moto.url)

    def dead_lettered() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queues.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    async with web.router.lifespan_context(web):
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            token = await candidate_token(client)
            with worker_tier(env, queues, tmp_path):
                assert (await upload_resume(client, token)).status_code == 202

                async def in_dlq() -> bool:
                    return await asyncio.to_thread(dead_lettered) == 1

                await wait_until(in_dlq, within=PIPELINE_SECONDS, what="in dlq", interval=0.2)
            status = (await client.get("/api/profile/resume-status", headers=auth(token))).json()
    assert status["status"] == "failed"

    [message] = drain(moto.url, queues.dlq_url)
    body = orjson.loads(message["Body"])
    assert body["task"] == "resume-parse"
    assert body["payload"]["storage_key"].endswith(".pdf")
    assert int(message["Attributes"]["ApproximateReceiveCount"]) >= 3
    assert drain(moto.url, queues.url) == []
    assert await count(web, FailedJob, FailedJob.dead_lettered.is_(True)) == 1
    assert await count(web, ProcessedJob) == 0
