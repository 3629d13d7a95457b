"""Values taken from sqsd's headers are validated before anything is written: a message id
longer than its column allows or not printable ASCII, a task name or time of absurd length, a
receive count outside a 32-bit INTEGER are a 400 in the shared error shape, and nothing lands
in processed_jobs or failed_jobs."""

import httpx
import pytest
from fastapi import FastAPI

from app.models import FailedJob, ProcessedJob
from app.services.job_queue import JobMessage
from tests.worker.helpers import count, post_cron, sqsd_headers

EMAIL = {"to": "casey@example.com", "subject": "Hello", "body": "Hi.", "kind": "welcome"}

BAD_HEADERS: dict[str, dict[str, str | bytes]] = {
    "message id longer than its column": {"X-Aws-Sqsd-Msgid": "m" * 300},
    "message id with a control character": {"X-Aws-Sqsd-Msgid": "abc\x01def"},
    # Bytes: sent as they are (Latin-1, as a server decodes them).
    "message id not ASCII": {"X-Aws-Sqsd-Msgid": b"caf\xe9"},
    "receive count past 32 bits": {"X-Aws-Sqsd-Receive-Count": str(2**31)},
    "receive count past 64 bits": {"X-Aws-Sqsd-Receive-Count": str(2**64)},
    "receive count of digits int() refuses": {"X-Aws-Sqsd-Receive-Count": b"\xb2"},
    "receive count zero": {"X-Aws-Sqsd-Receive-Count": "0"},
    "receive count negative": {"X-Aws-Sqsd-Receive-Count": "-1"},
    "task name of absurd length": {"X-Aws-Sqsd-Taskname": "t" * 1000},
    "scheduled time of absurd length": {"X-Aws-Sqsd-Scheduled-At": "2" * 1000},
}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
async def test_bad_sqsd_header_is_a_400_and_writes_nothing(
    name: str, worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    merged: dict[str, str | bytes] = {**sqsd_headers(), **BAD_HEADERS[name]}
    headers = {
        key.encode(): value if isinstance(value, bytes) else value.encode()
        for key, value in merged.items()
    }
    response = await worker_client.post(
        "/worker/email", content=JobMessage("email", EMAIL).encode(), headers=headers
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_header" and isinstance(error["message"], str)
    assert await count(worker_app, ProcessedJob) == 0
    assert await count(worker_app, FailedJob) == 0


async def test_scheduled_time_past_the_calendar_in_utc_is_not_a_server_error(
    worker_app: FastAPI, worker_client: httpx.AsyncClient
) -> None:
    """9999-12-31 at UTC-5 is past year 9999 in UTC: the time is treated as absent."""
    response = await post_cron(worker_client, "cleanup-sessions", "9999-12-31T23:59:59-05:00")
    assert response.status_code == 200, response.text
    assert await count(worker_app, ProcessedJob) == 1
