"""Helpers for worker tests: sqsd-style requests, resume files, database counts."""

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.services.job_queue import JobMessage


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
    client: httpx.AsyncClient, task: str, scheduled_at: str, message_id: str | None = None
) -> httpx.Response:
    """A cron delivery: empty body, task name and scheduled time in headers."""
    headers = {
        **sqsd_headers(message_id),
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
