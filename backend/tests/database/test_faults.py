"""Faults the engine must absorb without the client noticing, or leave to their owner."""

import asyncio
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from app.main import create_app
from tests.conftest import make_settings
from tests.support.apps import AppFactory, client_for
from tests.support.database import asyncpg_dsn
from tests.support.factories import auth, candidate_token


async def test_an_idle_connection_killed_by_the_server_is_replaced_by_pre_ping(
    tmp_path: Path, postgres_url: str, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=postgres_url, use_external_pooler=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        token = await candidate_token(client)
        assert (await client.get("/api/profile", headers=auth(token))).status_code == 200
        # A failover or an idle-session kill closes the pool's connections while they wait.
        admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'hiring-pro-backend-web'"
                # Only this test worker's database: other workers' backends carry the same name.
                " AND datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        response = await client.get("/api/profile", headers=auth(token))
    assert killed >= 1
    assert response.status_code == 200


async def test_a_cancelled_statement_stays_cancelled(app_with: AppFactory) -> None:
    """Cancellation (a timeout around a query, a request cut short at shutdown) is no database
    fault: it must reach whoever cancelled, not turn into database_unavailable."""
    async with app_with() as app, app.state.resources.database.session("default") as session:
        await session.execute(text("SELECT 1"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await session.execute(text("SELECT pg_sleep(30)"))
