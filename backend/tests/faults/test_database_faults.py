"""Drills: PostgreSQL and its pooler fail under steady traffic to the web tier (gunicorn, 2
workers). Every drill checks the same promises (tests/faults/rig.py): every answer inside the
error contract, every acknowledged write stored exactly once and no refused write stored, no
traceback in the log, recovery without a restart; a summary row per drill.
"""

import asyncio
import time

import asyncpg
import httpx
import pytest

from tests.faults.rig import FAULT_SECONDS, Population, Scenario, finish, readiness, start_web
from tests.support.database import asyncpg_dsn, tables_locked
from tests.support.gunicorn_server import GunicornServer
from tests.support.pgbouncer import PgBouncer

pytestmark = pytest.mark.slow


def hold_locks(postgres_url: str, seconds: float, *tables: str) -> None:
    """Hold ACCESS EXCLUSIVE locks on `tables` for `seconds`."""

    async def hold() -> None:
        async with tables_locked(postgres_url, *tables):
            await asyncio.sleep(seconds)

    asyncio.run(hold())


def test_postgres_backends_terminated_mid_request(
    web: GunicornServer, population: Population, postgres_url: str
) -> None:
    terminated: list[int] = []

    async def terminate_repeatedly() -> None:
        # Only this database's app connections: other test workers share the server.
        connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            deadline = time.monotonic() + FAULT_SECONDS
            while time.monotonic() < deadline:
                rows = await connection.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND application_name LIKE 'hiring-pro-backend-%'"
                )
                terminated.append(len(rows))
                await asyncio.sleep(0.2)
        finally:
            await connection.close()

    drill = Scenario(web, population, "pg-terminated").run(
        lambda: asyncio.run(terminate_repeatedly())
    )
    finish(drill, postgres_url, web)
    assert sum(terminated) > 0
    failed = {c.label for c in drill.calls if not c.ok}
    assert failed <= {"503 database_unavailable"}, failed


def test_table_locked_past_the_lock_timeout(
    web: GunicornServer, population: Population, postgres_url: str
) -> None:
    probes: list[httpx.Response] = []

    def fault() -> None:
        # Test taking stops at its table; the probe is asked while the lock is held.
        async def hold() -> None:
            async with tables_locked(postgres_url, "answers"):
                await asyncio.sleep(FAULT_SECONDS / 2)
                probes.append(await asyncio.to_thread(readiness, web))
                await asyncio.sleep(FAULT_SECONDS / 2)

        asyncio.run(hold())

    drill = Scenario(web, population, "lock-timeout").run(fault)
    finish(drill, postgres_url, web)
    during = drill.during()
    assert {c.label for c in during if c.op == "answer" and not c.ok} == {"504 database_timeout"}
    # Routes that do not touch the locked table kept working, and so did the instance.
    assert [c for c in during if c.op != "answer" and not c.ok] == []
    assert probes[0].status_code == 200


def test_query_past_the_statement_timeout(
    database_url: str, redis_url: str, population: Population, postgres_url: str
) -> None:
    # The lock wait outlasts the hot reads' statement budget (1 s), so that budget ends them.
    server = start_web(database_url, REDIS_URL=redis_url, DB_LOCK_TIMEOUT_MS="3000")
    try:
        drill = Scenario(server, population, "statement-timeout").run(
            lambda: hold_locks(postgres_url, FAULT_SECONDS, "jobs")
        )
        finish(drill, postgres_url, server)
    finally:
        server.stop()
    failed = {c.label for c in drill.calls if not c.ok}
    assert "504 database_timeout" in failed
    assert failed <= {"504 database_timeout", "503 service_busy"}, failed
    assert [c for c in drill.during() if c.op in ("answer", "notifications") and not c.ok] == []


def test_pooler_restarted_under_load(
    database_url: str, redis_url: str, population: Population, postgres_url: str
) -> None:
    bouncer = PgBouncer(pool_size=5)
    bouncer.start()
    server = start_web(
        bouncer.url_for(postgres_url),
        REDIS_URL=redis_url,
        USE_EXTERNAL_POOLER="true",
        DATABASE_DIRECT_URL=postgres_url,
    )

    def fault() -> None:
        bouncer.kill()
        time.sleep(FAULT_SECONDS / 2)
        bouncer.start()

    try:
        drill = Scenario(server, population, "pooler-restart").run(fault)
        finish(drill, postgres_url, server)
    finally:
        server.stop()
        bouncer.cleanup()
    failed = {c.label for c in drill.calls if not c.ok}
    assert failed <= {"503 database_unavailable", "503 service_busy"}, failed
