"""Hot reads on the read pool are retried once on a new connection when theirs died mid-read,
and only then: not when they ran out of time, not when the database cannot be reached."""

import asyncio
import logging

import pytest

from tests.support.apps import AppFactory, client_for
from tests.support.database import lock_waiters, tables_locked, terminate_backends
from tests.support.factories import create_job
from tests.support.redis_server import free_port
from tests.support.wait import wait_until

READ_APP = "hiring-pro-backend-web-read"


def _retries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "app.database" and "retrying the read" in record.getMessage()
    ]


async def test_a_read_whose_backend_is_terminated_is_retried_once(
    app_with: AppFactory, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Only the test ends the read (no budget can end it first on a loaded machine).
    async with (
        app_with(db_read_statement_timeout_ms=60_000, db_lock_timeout_ms=60_000) as app,
        client_for(app) as client,
    ):
        await create_job(app)
        async with tables_locked(postgres_url, "jobs"):
            # The listing waits for the lock on its read-pool connection: a known backend, busy
            # in a statement when it is terminated (a failover, an operator, a pooler restart).
            listing = asyncio.create_task(client.get("/api/jobs"))
            pids = await wait_until(
                lambda: lock_waiters(postgres_url, READ_APP),
                within=10,
                what="the listing to wait for the lock",
            )
            terminated = await terminate_backends(postgres_url, READ_APP, pids)
        response = await listing
    assert terminated == 1
    assert response.status_code == 200
    assert len(response.json()["items"]) == 1
    assert len(_retries(caplog)) == 1


async def test_a_read_that_runs_out_of_time_is_not_retried(
    app_with: AppFactory, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        app_with(db_read_statement_timeout_ms=300, db_lock_timeout_ms=60_000) as app,
        client_for(app) as client,
    ):
        await create_job(app)
        async with tables_locked(postgres_url, "jobs"):
            response = await client.get("/api/jobs")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "database_timeout"
    assert _retries(caplog) == []


async def test_a_read_that_cannot_connect_is_not_retried(
    app_with: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    dead_db = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/hp_test_gone"
    async with app_with(database_url=dead_db) as app, client_for(app) as client:
        response = await client.get("/api/jobs")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert _retries(caplog) == []
