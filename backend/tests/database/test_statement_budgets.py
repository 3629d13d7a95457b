"""Statement budgets per kind of route: admin reports and lists get a longer one than ordinary
routes, set per transaction (so behind the pooler too)."""

import asyncio

from sqlalchemy import text

from tests.support.apps import AppFactory, client_for
from tests.support.database import lock_waiters, tables_locked
from tests.support.factories import admin_token, auth
from tests.support.wait import wait_until


async def test_admin_reads_run_with_their_own_budget(app_with: AppFactory) -> None:
    async with app_with(db_statement_timeout_ms=4321, db_admin_statement_timeout_ms=8765) as app:
        database = app.state.resources.database
        async with database.report_connection() as connection:
            report_budget = await connection.scalar(text("SHOW statement_timeout"))
            report_lock_budget = await connection.scalar(text("SHOW lock_timeout"))
        async with database.session("default") as session:
            ordinary_budget = await session.scalar(text("SHOW statement_timeout"))
    assert report_budget == "8765ms"
    # The lock timeout is the same for every route.
    assert report_lock_budget == "5s"
    assert ordinary_budget == "4321ms"


async def test_an_admin_list_outlasts_the_ordinary_budget(
    app_with: AppFactory, postgres_url: str
) -> None:
    async with (
        app_with(
            db_statement_timeout_ms=300,
            db_admin_statement_timeout_ms=60_000,
            db_lock_timeout_ms=60_000,
        ) as app,
        client_for(app) as client,
    ):
        token = await admin_token(app, client)
        async with tables_locked(postgres_url, "test_attempts"):
            results = asyncio.create_task(client.get("/api/admin/results", headers=auth(token)))
            await wait_until(
                lambda: lock_waiters(postgres_url, "hiring-pro-backend-web"),
                within=10,
                what="the results query to wait for the lock",
            )
            # Twice the ordinary budget: under it the statement would have been cancelled.
            await asyncio.sleep(0.6)
        response = await results
    assert response.status_code == 200
    assert response.json()["items"] == []
