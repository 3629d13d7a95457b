"""`alembic upgrade head` run the way deploys run it: several at once, behind a transaction pooler.

Each test starts real `python -m alembic upgrade head` processes against a new, empty database.
"""

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.config.settings import MIGRATIONS_LOCK_KEY
from app.models import Base
from tests.conftest import TEST_JWT_SECRET
from tests.support.database import BACKEND_DIR, asyncpg_dsn, create_database, drop_database
from tests.support.redis_server import free_port
from tests.support.wait import LOADED_MACHINE_MARGIN, wait_until

pytestmark = pytest.mark.slow

MIGRATIONS_APPLICATION_NAME = "hiring-pro-backend-migrations"
# Interpreter start, imports and every migration of an empty database, on a loaded 2-core machine.
UPGRADE_SECONDS = 60.0
HEAD = ScriptDirectory.from_config(Config(str(BACKEND_DIR / "alembic.ini"))).get_current_head()


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    """A new database without any table; dropped (connections and all) after the test."""
    url = await create_database("hp_migrations")
    yield url
    await drop_database(url)


def _bogus_url() -> str:
    """A Postgres URL on a port where nothing listens: a pooler the migrations must not use."""
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"


def _environment(
    *, database_url: str, pooler: bool, direct_url: str | None = None
) -> dict[str, str]:
    # The outer environment may be a USE_EXTERNAL_POOLER=true test pass: every value is explicit.
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATABASE_URL": database_url,
        "USE_EXTERNAL_POOLER": "true" if pooler else "false",
    }
    env.pop("DATABASE_DIRECT_URL", None)
    if direct_url is not None:
        env["DATABASE_DIRECT_URL"] = direct_url
    return env


async def _start_upgrade(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        "upgrade",
        "head",
        cwd=BACKEND_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """The exit code and stderr of an upgrade process."""
    _, stderr = await asyncio.wait_for(
        process.communicate(), UPGRADE_SECONDS + LOADED_MACHINE_MARGIN
    )
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def _kill(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        records: list[asyncpg.Record] = await connection.fetch(query, *args)
        return records
    finally:
        await connection.close()


async def _tables(url: str) -> set[str]:
    records = await _fetch(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {record["tablename"] for record in records}


async def _assert_migrated_once(url: str) -> None:
    assert HEAD is not None
    versions = await _fetch(url, "SELECT version_num FROM alembic_version")
    assert [record["version_num"] for record in versions] == [HEAD]
    expected = {table.name for table in Base.metadata.sorted_tables}
    assert expected <= await _tables(url)


async def test_simultaneous_upgrades_both_succeed_and_migrate_once(empty_database: str) -> None:
    env = _environment(database_url=empty_database, pooler=False)
    processes = [await _start_upgrade(env), await _start_upgrade(env)]
    try:
        results = await asyncio.gather(*(_finish(process) for process in processes))
    finally:
        await _kill(processes)

    for code, stderr in results:
        assert code == 0, stderr
    await _assert_migrated_once(empty_database)


@pytest.mark.parametrize("behind_pooler", [False, True], ids=["direct", "behind_pooler"])
async def test_upgrades_wait_on_the_migrations_lock_then_migrate_once(
    empty_database: str, behind_pooler: bool
) -> None:
    # Behind the pooler DATABASE_URL leads nowhere: the migrations must use DATABASE_DIRECT_URL.
    if behind_pooler:
        env = _environment(database_url=_bogus_url(), pooler=True, direct_url=empty_database)
    else:
        env = _environment(database_url=empty_database, pooler=False)
    # Request budgets far below the wait: migrations must not carry them.
    env |= {"DB_STATEMENT_TIMEOUT_MS": "100", "DB_LOCK_TIMEOUT_MS": "100"}
    # Advisory locks belong to a database: hold the migrations' key in the one being migrated.
    holder = await asyncpg.connect(asyncpg_dsn(empty_database))
    processes: list[asyncio.subprocess.Process] = []
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK_KEY)
        processes = [await _start_upgrade(env), await _start_upgrade(env)]

        async def both_waiting_on_the_lock() -> bool:
            for process in processes:
                assert process.returncode is None, "an upgrade ended while the lock was held"
            # A bigint advisory key shows in pg_locks as classid (high half), objid (low half).
            waiting = await holder.fetchval(
                """
                SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND NOT l.granted AND l.objsubid = 1
                  AND l.classid = $1 AND l.objid = $2 AND a.datname = current_database()
                  AND a.application_name = $3
                  AND a.wait_event_type = 'Lock' AND a.wait_event = 'advisory'
                """,
                MIGRATIONS_LOCK_KEY >> 32,
                MIGRATIONS_LOCK_KEY & 0xFFFFFFFF,
                MIGRATIONS_APPLICATION_NAME,
            )
            return bool(waiting == 2)

        await wait_until(
            both_waiting_on_the_lock,
            within=UPGRADE_SECONDS,
            what="both upgrades to wait on the migrations lock",
        )
        # Nothing was created before the lock: alembic reads the revision only once it holds it.
        assert await _tables(empty_database) == set()
        # Well past both budgets, they still wait.
        await asyncio.sleep(1)
        assert await both_waiting_on_the_lock()

        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK_KEY)
        results = await asyncio.gather(*(_finish(process) for process in processes))
    finally:
        await holder.close()
        await _kill(processes)

    for code, stderr in results:
        assert code == 0, stderr
    await _assert_migrated_once(empty_database)


async def test_behind_the_pooler_without_a_direct_url_migrations_refuse(
    empty_database: str,
) -> None:
    # DATABASE_URL is a real database here: only the guard keeps the migrations off it.
    env = _environment(database_url=empty_database, pooler=True)
    process = await _start_upgrade(env)
    try:
        code, stderr = await _finish(process)
    finally:
        await _kill([process])

    assert code != 0
    assert "migrations need DATABASE_DIRECT_URL" in stderr
    assert "never the transaction pooler" in stderr
    assert await _tables(empty_database) == set()
