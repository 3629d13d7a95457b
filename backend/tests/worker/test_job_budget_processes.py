"""The job time budget with the worker app as a real process (gunicorn with uvicorn workers, as
on EB, where gunicorn's --timeout stops no request): a job past WORKER_JOB_TIMEOUT_SECONDS is
answered 504 long before its slow upstream would answer, keeps nothing and runs once when
redelivered; on the last allowed receive it is recorded as dead-lettered, and the resume
parser process it was waiting on is killed and reaped."""

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.models import CandidateProfile
from tests.support.database import asyncpg_dsn
from tests.support.fake_upstream import FakeUpstream
from tests.support.moto_server import MotoServer
from tests.support.resume_files import costly_pdf_bytes
from tests.support.sqs_server import QueuePair, start_worker
from tests.support.wait import wait_until
from tests.worker.helpers import create_candidate, post_job
from tests.worker.processes import child_pids, worker_env

pytestmark = pytest.mark.slow

# The slow upstream answers after this long; the worker must answer well before (a budget of a
# second or two, plus any stall of a loaded machine).
SLOW_UPSTREAM_SECONDS = 60.0
ANSWER_WITHIN_SECONDS = SLOW_UPSTREAM_SECONDS / 2
UPSERT = "/vectors/upsert"


async def rows(postgres_url: str, query: str) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        return [tuple(row) for row in await connection.fetch(query)]
    finally:
        await connection.close()


def expect_timeout_answer(response: httpx.Response) -> None:
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "job_timeout"
    assert response.headers["Retry-After"].isdigit()


async def test_a_job_past_its_budget_is_cut_off_and_runs_once_when_redelivered(
    tmp_path: Path,
    worker_settings: Settings,
    postgres_url: str,
    moto: MotoServer,
    queues: QueuePair,
    upstream: FakeUpstream,
) -> None:
    env = worker_env(
        worker_settings,
        moto,
        queues,
        WORKER_JOB_TIMEOUT_SECONDS="1",
        VECTOR_BACKEND="pinecone",
        PINECONE_API_KEY=upstream.api_key,
        PINECONE_INDEX_HOST=upstream.url,
        # Longer than the slow upstream: only the job budget can end the call.
        PINECONE_TIMEOUT_SECONDS=str(2 * SLOW_UPSTREAM_SECONDS),
        # The cut-off upsert still lands in the fake a minute later: not where other tests look.
        PINECONE_NAMESPACE=f"budget-{uuid.uuid4().hex}",
    )
    upstream.set_mode("healthy", delay=SLOW_UPSTREAM_SECONDS)
    worker, url = start_worker(env, tmp_path)
    job_id, message_id = uuid.uuid4().hex, str(uuid.uuid4())
    payload = {"candidate_id": 42, "text": "python fastapi postgres"}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=ANSWER_WITHIN_SECONDS) as client:
            started = time.monotonic()
            response = await post_job(
                client, "vector-index", payload, job_id=job_id, message_id=message_id
            )
            elapsed = time.monotonic() - started
            expect_timeout_answer(response)
            assert elapsed < ANSWER_WITHIN_SECONDS
            assert await rows(postgres_url, "SELECT key FROM processed_jobs") == []
            assert await rows(postgres_url, "SELECT key FROM failed_jobs") == []

            # Pinecone is fast again; sqsd delivers the message a second and a third time.
            upstream.set_mode("healthy")
            again = await post_job(
                client,
                "vector-index",
                payload,
                job_id=job_id,
                message_id=message_id,
                receive_count=2,
            )
            third = await post_job(
                client,
                "vector-index",
                payload,
                job_id=job_id,
                message_id=message_id,
                receive_count=3,
            )
        assert (again.status_code, again.json()["status"]) == (200, "done")
        assert (third.status_code, third.json()["status"]) == (200, "duplicate")
        assert await rows(postgres_url, "SELECT key, status FROM processed_jobs") == [
            (f"job:{job_id}", "done")
        ]
        assert upstream.calls(UPSERT) == 2  # the cut-off run and the one that finished
        log = worker.log()
        assert log.count("event=job_timeout") == 1, log
        assert "budget_seconds=1.0" in log and f"job_key=job:{job_id}" in log
        assert "Traceback" not in log, log
    finally:
        worker.stop()


async def test_a_resume_parse_cut_off_on_its_last_receive_is_dead_lettered_without_its_parser(
    tmp_path: Path,
    worker_app: FastAPI,
    worker_settings: Settings,
    postgres_url: str,
    moto: MotoServer,
    queues: QueuePair,
) -> None:
    """A PDF that costs minutes of CPU, on the queue's last allowed receive: the parser's own
    limits are far away, the job budget ends it."""
    budget = 3
    env = worker_env(
        worker_settings,
        moto,
        queues,
        WORKER_JOB_TIMEOUT_SECONDS=str(budget),
        RESUME_PARSE_CPU_SECONDS="120",
        RESUME_PARSE_TIMEOUT_SECONDS="240",
    )
    key = f"resumes/{uuid.uuid4().hex}.pdf"
    await worker_app.state.resources.storage.put(key, costly_pdf_bytes(), "application/pdf")
    user_id = await create_candidate(worker_app, key)
    job_id = uuid.uuid4().hex
    master, url = start_worker(env, tmp_path)
    try:
        [worker_pid] = child_pids(master.process.pid)
        async with httpx.AsyncClient(base_url=url, timeout=ANSWER_WITHIN_SECONDS) as client:
            delivery = asyncio.create_task(
                post_job(
                    client,
                    "resume-parse",
                    {"user_id": user_id, "storage_key": key},
                    job_id=job_id,
                    receive_count=3,
                )
            )

            async def parser_running() -> bool:
                return bool(child_pids(worker_pid)) or delivery.done()

            await wait_until(parser_running, within=budget, what="the parser process")
            assert child_pids(worker_pid), "the job ended before its parser started"
            response = await delivery
        expect_timeout_answer(response)
        # Killed and reaped before the answer: no parser process, not even a zombie.
        assert child_pids(worker_pid) == []
        assert await rows(
            postgres_url, "SELECT key, receive_count, dead_lettered, reason FROM failed_jobs"
        ) == [(f"job:{job_id}", 3, True, f"failed on receive 3: timed out after {budget} s")]
        assert await rows(postgres_url, "SELECT key FROM processed_jobs") == []
        async with worker_app.state.resources.database.sessionmaker() as session:
            profile = await session.get(CandidateProfile, user_id)
        assert profile is not None and profile.resume_status == "failed"  # the give-up hook ran
        log = master.log()
        assert log.count("event=job_timeout") == 1, log
        assert "Traceback" not in log, log
    finally:
        master.stop()
