"""Direct connections say who they are and carry the statement timeout from their first query.

(Behind a pooler startup options are dropped; the per-transaction timeout is checked by
behaviour in test_pooler.py.)
"""

from pathlib import Path

import asyncpg
from sqlalchemy import text

from app.database import Database
from tests.conftest import make_settings
from tests.support.database import asyncpg_dsn


async def test_direct_connections_show_their_role_and_timeout(
    tmp_path: Path, postgres_url: str, database_url: str
) -> None:
    settings = make_settings(
        tmp_path,
        database_url=postgres_url,
        use_external_pooler=False,
        db_statement_timeout_ms=1234,
        db_read_statement_timeout_ms=567,
    )
    database = Database.create(settings, role="worker")
    await database.open_read_pool(settings, role="worker")
    assert database.read_pool is not None
    observer = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        async with database.engine.connect() as connection:
            engine_pid = await connection.scalar(text("SELECT pg_backend_pid()"))
            engine_timeout = await connection.scalar(text("SHOW statement_timeout"))
            async with database.read_pool.acquire() as read_connection:
                read_pid = await read_connection.fetchval("SELECT pg_backend_pid()")
                read_timeout = await read_connection.fetchval("SHOW statement_timeout")
                rows = await observer.fetch(
                    "SELECT pid, application_name FROM pg_stat_activity WHERE pid = ANY($1)",
                    [engine_pid, read_pid],
                )
    finally:
        await observer.close()
        await database.dispose()
    names = {row["pid"]: row["application_name"] for row in rows}
    assert names == {
        engine_pid: "hiring-pro-backend-worker",
        read_pid: "hiring-pro-backend-worker-read",
    }
    assert engine_timeout == "1234ms"
    # The hot reads have their own, shorter budget.
    assert read_timeout == "567ms"
