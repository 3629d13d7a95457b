"""Helpers for worker tests: sqsd-style requests, resume files, database counts."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.config import Settings
from app.models import CandidateProfile, User
from app.models.base import utcnow
from app.services.job_queue import JobMessage
from app.worker_app import create_worker_app


def sqsd_headers(message_id: str | None = None, receive_count: int = 1) -> dict[str, str]:
    """The headers EB's sqsd sends with a message (plus an unknown one, to be tolerated)."""
    return {
        "User-Agent": "aws-sqsd/3.0.4",
        "Content-Type": "application/json",
        "X-Aws-Sqsd-Msgid": message_id or str(uuid.uuid4()),
        "X-Aws-Sqsd-Queue": "hiring-pro-test",
        "X-Aws-Sqsd-First-Received-At": "2026-01-01T00:00:00Z",
        "X-Aws-Sqsd-Receive-Count": str(receive_count),
        "X-Aws-Sqsd-Sent-At": "2026-01-01T00:00:00Z",
        "X-Aws-Sqsd-Some-Future-Header": "ignored",
    }


async def post_job(
    client: httpx.AsyncClient,
    task: str,
    payload: dict[str, Any],
    *,
    message_id: str | None = None,
    job_id: str | None = None,
    receive_count: int = 1,
) -> httpx.Response:
    """POST a job message to its worker route the way sqsd does."""
    message = JobMessage(task, payload) if job_id is None else JobMessage(task, payload, id=job_id)
    return await client.post(
        f"/worker/{task}",
        content=message.encode(),
        headers=sqsd_headers(message_id, receive_count),
    )


async def post_cron(
    client: httpx.AsyncClient,
    task: str,
    scheduled_at: str,
    message_id: str | None = None,
    receive_count: int = 1,
) -> httpx.Response:
    """A cron delivery: empty body, task name and scheduled time in headers."""
    headers = {
        **sqsd_headers(message_id, receive_count),
        "X-Aws-Sqsd-Taskname": task,
        "X-Aws-Sqsd-Scheduled-At": scheduled_at,
        "X-Aws-Sqsd-Sender-Id": "AIDAEXAMPLE",
    }
    return await client.post(f"/worker/{task}", content=b"", headers=headers)


async def count(app: FastAPI, model: Any, *conditions: Any) -> int:
    """Rows of ``model`` matching ``conditions``."""
    async with app.state.resources.database.sessionmaker() as session:
        total = await session.scalar(select(func.count()).select_from(model).where(*conditions))
    return int(total or 0)


async def post_cron_without_sqsd_headers(client: httpx.AsyncClient, task: str) -> httpx.Response:
    """A cron delivery as simple-sqsd's cron worker sends it: a bare POST to the task's URL, no
    message id, task name or scheduled time."""
    headers = {"User-Agent": "Go-http-client/1.1", "Content-Type": "application/json"}
    return await client.post(f"/worker/{task}", content=b"", headers=headers)


@asynccontextmanager
async def running_worker_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The worker app built from ``settings``, its lifespan running."""
    application = create_worker_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def loopback_client(app: FastAPI) -> httpx.AsyncClient:
    """A client of ``app`` connecting from 127.0.0.1, as the local sqsd does."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://worker")


async def create_candidate(app: FastAPI, resume_key: str | None = None) -> int:
    """A candidate whose profile points at ``resume_key`` (queued), or has no resume; the id."""
    async with app.state.resources.database.sessionmaker() as session:
        user = User(
            email=f"{uuid.uuid4().hex[:8]}@example.com", password_hash="x", full_name="Casey"
        )
        session.add(user)
        await session.flush()
        session.add(
            CandidateProfile(
                user_id=user.id,
                resume_key=resume_key,
                resume_status="queued" if resume_key else "none",
                resume_uploaded_at=utcnow() if resume_key else None,
            )
        )
        await session.commit()
        return user.id
