"""The worker app's routes with sqsd's semantics, against Postgres and the moto SQS server."""

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy import select

from app.models import (
    Assessment,
    Attempt,
    CandidateProfile,
    DailyReport,
    EmailOutbox,
    FailedJob,
    Notification,
    ProcessedJob,
    User,
)
from app.services.job_queue import JobMessage
from app.worker.context import derived_job_id
from app.worker_app import create_worker_app
from tests.support.moto_server import MotoServer
from tests.support.resume_files import RESUME_TEXT, docx_bytes
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import QueuePair, drain
from tests.worker.helpers import count, create_candidate, post_cron, post_job, sqsd_headers

EMAIL = {
    "to": "casey@example.com",
    "subject": "Hello",
    "body": "Welcome aboard.",
    "kind": "welcome",
}


async def profile_of(app: FastAPI, user_id: int) -> CandidateProfile:
    async with app.state.resources.database.sessionmaker() as session:
        profile: CandidateProfile | None = await session.get(CandidateProfile, user_id)
        assert profile is not None
        return profile


async def test_worker_routes_accept_loopback_clients_only(worker_app: FastAPI) -> None:
    remote = httpx.ASGITransport(app=worker_app, client=("10.0.0.8", 5000))
    async with httpx.AsyncClient(transport=remote, base_url="http://worker") as client:
        response = await post_job(client, "email", EMAIL)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    local = httpx.ASGITransport(app=worker_app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=local, base_url="http://worker") as client:
        # nginx on the same host connects from loopback but names the real client.
        for forwarded in ("203.0.113.9", "127.0.0.1, 203.0.113.9"):
            response = await client.post(
                "/worker/email",
                content=JobMessage("email", EMAIL).encode(),
                headers={**sqsd_headers(), "X-Forwarded-For": forwarded},
            )
            assert response.status_code == 403
        response = await client.post(
            "/worker/email",
            content=JobMessage("email", EMAIL).encode(),
            headers={**sqsd_headers(), "X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"},
        )
        assert response.status_code == 200
    assert await count(worker_app, EmailOutbox) == 1


async def test_web_app_does_not_mount_worker_routes(client: httpx.AsyncClient) -> None:
    response = await client.post("/worker/email", content=b"{}", headers=sqsd_headers())
    assert response.status_code == 404


async def test_worker_app_health(worker_client: httpx.AsyncClient) -> None:
    response = await worker_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_duplicate_delivery_does_the_work_once(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    job_id, message_id = uuid.uuid4().hex, str(uuid.uuid4())
    first = await post_job(worker_client, "email", EMAIL, job_id=job_id, message_id=message_id)
    again = await post_job(
        worker_client, "email", EMAIL, job_id=job_id, message_id=message_id, receive_count=2
    )
    # A producer's retried send: another SQS message carrying the same job.
    resent = await post_job(worker_client, "email", EMAIL, job_id=job_id)
    assert [r.status_code for r in (first, again, resent)] == [200, 200, 200]
    assert [r.json()["status"] for r in (first, again, resent)] == [
        "done",
        "duplicate",
        "duplicate",
    ]
    assert await count(worker_app, EmailOutbox, EmailOutbox.job_id == job_id) == 1
    async with worker_app.state.resources.database.sessionmaker() as session:
        outbox = (await session.scalars(select(EmailOutbox))).one()
    assert (outbox.status, outbox.recipient, outbox.body) == (
        "logged",
        "casey@example.com",
        "Welcome aboard.",
    )


async def test_concurrent_deliveries_of_one_job_commit_once(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    job_id = uuid.uuid4().hex
    responses = await asyncio.gather(
        *(post_job(worker_client, "email", EMAIL, job_id=job_id) for _ in range(6))
    )
    assert all(response.status_code == 200 for response in responses)
    statuses = sorted(response.json()["status"] for response in responses)
    assert statuses == ["done"] + ["duplicate"] * 5
    assert await count(worker_app, EmailOutbox) == 1
    assert await count(worker_app, ProcessedJob, ProcessedJob.key == f"job:{job_id}") == 1


async def test_messages_that_can_never_succeed_are_recorded_and_acknowledged(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    cases = {
        "malformed": b"this is not json",
        "unknown": JobMessage("make-coffee", {}).encode(),
        "invalid": JobMessage(
            "email", {"to": "not-an-address", "subject": "x", "body": "y"}
        ).encode(),
    }
    for name, body in cases.items():
        message_id = f"msg-{name}"
        for receive in (1, 2):  # a redelivery does not record it twice
            response = await worker_client.post(
                "/worker/email", content=body, headers=sqsd_headers(message_id, receive)
            )
            assert response.status_code == 200, response.text
            assert response.json()["status"] == ("rejected" if receive == 1 else "duplicate")
    async with worker_app.state.resources.database.sessionmaker() as session:
        failed = {row.message_id: row for row in await session.scalars(select(FailedJob))}
    assert set(failed) == {"msg-malformed", "msg-unknown", "msg-invalid"}
    assert "not a job message" in failed["msg-malformed"].reason
    assert failed["msg-malformed"].body == "this is not json"
    assert "unknown task" in failed["msg-unknown"].reason
    assert "invalid email payload (to)" in failed["msg-invalid"].reason
    assert not any(row.dead_lettered for row in failed.values())
    assert await count(worker_app, EmailOutbox) == 0


async def test_a_request_without_message_id_is_refused(worker_client: httpx.AsyncClient) -> None:
    response = await worker_client.post(
        "/worker/email", content=JobMessage("email", EMAIL).encode()
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "missing_message_id"


async def test_resume_parse_updates_profile_notifies_and_queues_indexing(
    worker_app: FastAPI, worker_client: httpx.AsyncClient, moto: MotoServer, queues: QueuePair
) -> None:
    key = f"resumes/{uuid.uuid4().hex}.docx"
    await worker_app.state.resources.storage.put(
        key, docx_bytes(RESUME_TEXT), "application/octet-stream"
    )
    user_id = await create_candidate(worker_app, key)
    job_id = uuid.uuid4().hex

    response = await post_job(
        worker_client, "resume-parse", {"user_id": user_id, "storage_key": key}, job_id=job_id
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "done"
    profile = await profile_of(worker_app, user_id)
    assert profile.resume_status == "parsed"
    assert profile.skills == [
        "Python",
        "PostgreSQL",
        "FastAPI",
        "Docker",
        "Kubernetes",
        "AWS",
        "REST",
    ]
    assert profile.experience_years == 6
    assert profile.summary and "Jordan Rivers" in profile.summary
    assert profile.resume_parsed_at is not None
    assert await count(worker_app, Notification, Notification.kind == "resume_parsed") == 1

    queued = [orjson.loads(message["Body"]) for message in drain(moto.url, queues.url)]
    assert [(m["task"], m["id"]) for m in queued] == [
        ("vector-index", derived_job_id(job_id, "vector-index"))
    ]
    assert queued[0]["payload"]["candidate_id"] == user_id
    indexed = await worker_client.post(
        "/worker/vector-index",
        content=orjson.dumps(queued[0]),
        headers=sqsd_headers(),
    )
    assert indexed.json()["status"] == "done"
    matches = await worker_app.state.resources.vector_index.query("python fastapi kubernetes", 1)
    assert matches and matches[0][0] == user_id


async def test_resume_with_missing_file_fails_for_good(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    key = f"resumes/{uuid.uuid4().hex}.pdf"  # never stored
    user_id = await create_candidate(worker_app, key)
    response = await post_job(
        worker_client, "resume-parse", {"user_id": user_id, "storage_key": key}
    )
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    profile = await profile_of(worker_app, user_id)
    assert profile.resume_status == "failed"
    assert profile.resume_error == "The resume file is missing."
    assert (
        await count(worker_app, FailedJob, FailedJob.reason == "The resume file is missing.") == 1
    )
    assert await count(worker_app, Notification, Notification.kind == "resume_failed") == 1


async def test_a_superseded_resume_job_changes_nothing(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    user_id = await create_candidate(worker_app, "resumes/newer.txt")
    response = await post_job(
        worker_client, "resume-parse", {"user_id": user_id, "storage_key": "resumes/older.txt"}
    )
    assert response.json()["status"] == "done"
    profile = await profile_of(worker_app, user_id)
    assert (profile.resume_status, profile.resume_key) == ("queued", "resumes/newer.txt")
    assert await count(worker_app, Notification) == 0


async def test_transient_failures_ask_for_retry_and_the_last_one_is_recorded(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair
) -> None:
    # Gemini at a closed port: the AI call fails like an outage would.
    from tests.support.redis_server import free_port

    settings = sqs_settings(
        tmp_path,
        database_url,
        moto,
        queues,
        ai_backend="gemini",
        gemini_api_key="test-key",
        gemini_base_url=f"http://127.0.0.1:{free_port()}",
        gemini_timeout_seconds=2.0,
    )
    app = create_worker_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            key = "resumes/transient.txt"
            await app.state.resources.storage.put(key, RESUME_TEXT.encode(), "text/plain")
            user_id = await create_candidate(app, key)
            payload = {"user_id": user_id, "storage_key": key}
            job_id, message_id = uuid.uuid4().hex, str(uuid.uuid4())
            for receive in (1, 2):
                response = await post_job(
                    client,
                    "resume-parse",
                    payload,
                    job_id=job_id,
                    message_id=message_id,
                    receive_count=receive,
                )
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "job_retry"
                assert response.headers["Retry-After"].isdigit()
            assert await count(app, FailedJob) == 0
            assert (await profile_of(app, user_id)).resume_status == "processing"

            response = await post_job(
                client,
                "resume-parse",
                payload,
                job_id=job_id,
                message_id=message_id,
                receive_count=3,
            )
            assert response.status_code == 503  # SQS moves it to the dead-letter queue
            async with app.state.resources.database.sessionmaker() as session:
                failed = (await session.scalars(select(FailedJob))).one()
            assert failed.dead_lettered and failed.receive_count == 3
            assert failed.key == f"job:{job_id}"
            assert orjson.loads(failed.body)["payload"] == payload
            assert await count(app, ProcessedJob) == 0  # a redrive from the DLQ may still run it
            assert (await profile_of(app, user_id)).resume_status == "failed"


async def seed_attempts(app: FastAPI, now: datetime) -> dict[str, int]:
    """Attempts in every state the cleanup distinguishes; returns their ids by label."""
    user_id = await create_candidate(app)
    async with app.state.resources.database.sessionmaker() as session:
        test = Assessment(title="Python", duration_minutes=30)
        session.add(test)
        await session.flush()
        specs = {
            "expired_long_ago": ("in_progress", now - timedelta(hours=2)),
            "expired_within_grace": ("in_progress", now - timedelta(minutes=2)),
            "running": ("in_progress", now + timedelta(minutes=20)),
            "abandoned_old": ("abandoned", now - timedelta(hours=30)),
            "abandoned_recent": ("abandoned", now - timedelta(hours=3)),
            "completed_old": ("completed", now - timedelta(days=3)),
        }
        attempts = {}
        for label, (status, expires_at) in specs.items():
            # One open attempt per candidate and test: give each its own test.
            own_test = Assessment(title=label, duration_minutes=30)
            session.add(own_test)
            await session.flush()
            attempt = Attempt(
                test_id=own_test.id,
                user_id=user_id,
                status=status,
                started_at=expires_at - timedelta(minutes=30),
                expires_at=expires_at,
            )
            session.add(attempt)
            attempts[label] = attempt
        await session.commit()
        return {label: attempt.id for label, attempt in attempts.items()}


async def attempt_states(app: FastAPI) -> dict[int, str]:
    async with app.state.resources.database.sessionmaker() as session:
        rows = await session.execute(select(Attempt.id, Attempt.status))
        return {attempt_id: status for attempt_id, status in rows}


async def test_cleanup_sessions_on_seeded_data_once_per_schedule(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC)
    ids = await seed_attempts(worker_app, now)
    scheduled = now.replace(minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")

    response = await post_cron(worker_client, "cleanup-sessions", scheduled)
    assert response.status_code == 200
    assert response.json()["status"] == "done"
    assert await attempt_states(worker_app) == {
        ids["expired_long_ago"]: "abandoned",
        ids["expired_within_grace"]: "in_progress",
        ids["running"]: "in_progress",
        ids["abandoned_recent"]: "abandoned",
        ids["completed_old"]: "completed",
    }  # abandoned_old was removed

    # The same schedule again (a second leader, or a redelivery): no extra effect.
    more = await seed_attempts(worker_app, now)
    again = await post_cron(worker_client, "cleanup-sessions", scheduled)
    assert again.json()["status"] == "duplicate"
    states = await attempt_states(worker_app)
    assert states[more["expired_long_ago"]] == "in_progress"
    assert more["abandoned_old"] in states

    later = await post_cron(worker_client, "cleanup-sessions", "2099-01-01T06:00:00Z")
    assert later.json()["status"] == "done"
    states = await attempt_states(worker_app)
    assert states[more["expired_long_ago"]] == "abandoned"
    assert more["abandoned_old"] not in states


async def test_generate_reports_writes_the_previous_day_once(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    day = datetime(2026, 3, 9, tzinfo=UTC)
    async with worker_app.state.resources.database.sessionmaker() as session:
        for offset_hours in (1, 10, 30):  # two on the day, one the next day
            session.add(
                User(
                    email=f"u{offset_hours}@example.com",
                    password_hash="x",
                    full_name="U",
                    created_at=day + timedelta(hours=offset_hours),
                )
            )
        test = Assessment(title="T", duration_minutes=30)
        session.add(test)
        await session.flush()
        user = (await session.scalars(select(User).order_by(User.id))).first()
        assert user is not None
        for score in (5.0, 10.0):
            other = Assessment(title=f"T{score}", duration_minutes=30)
            session.add(other)
            await session.flush()
            session.add(
                Attempt(
                    test_id=other.id,
                    user_id=user.id,
                    status="completed",
                    started_at=day + timedelta(hours=9),
                    expires_at=day + timedelta(hours=10),
                    completed_at=day + timedelta(hours=9, minutes=20),
                    score=score,
                    max_score=10.0,
                )
            )
        await session.commit()

    response = await post_cron(worker_client, "generate-reports", "2026-03-10T02:00:00Z")
    assert response.json()["status"] == "done"
    async with worker_app.state.resources.database.sessionmaker() as session:
        report = await session.get(DailyReport, date(2026, 3, 9))
    assert report is not None
    assert (report.new_candidates, report.attempts_started, report.attempts_completed) == (2, 2, 2)
    assert report.average_score_percent == 75.0
    assert (report.resumes_uploaded, report.jobs_posted) == (0, 0)

    again = await post_cron(worker_client, "generate-reports", "2026-03-10T02:00:00Z")
    assert again.json()["status"] == "duplicate"
    assert await count(worker_app, DailyReport) == 1


async def test_a_cron_request_on_a_queued_task_route_is_rejected(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    response = await post_cron(worker_client, "email", "2026-03-10T02:00:00Z")
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert await count(worker_app, FailedJob) == 1
