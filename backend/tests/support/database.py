"""Per-worker Postgres databases with the schema applied by Alembic."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from app.config import Settings
from app.models import Base

BACKEND_DIR = Path(__file__).resolve().parents[2]
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def asyncpg_dsn(url: str) -> str:
    """The plain asyncpg DSN of a SQLAlchemy `postgresql+asyncpg://` URL."""
    return url.replace("postgresql+asyncpg", "postgresql")


@asynccontextmanager
async def tables_locked(url: str, *tables: str) -> AsyncIterator[None]:
    """Hold ACCESS EXCLUSIVE locks on `tables` from a direct connection (like a migration or a
    stuck transaction) until the block ends."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        lock = connection.transaction()
        await lock.start()
        await connection.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        yield
        await lock.rollback()
    finally:
        await connection.close()


async def lock_waiters(url: str, application_name: str) -> list[int]:
    """Pids of the backends of `url`'s database, named `application_name`, waiting for a lock."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = $1 AND wait_event_type = 'Lock' ORDER BY pid",
            application_name,
        )
    finally:
        await connection.close()
    return [row["pid"] for row in rows]


async def terminate_backends(url: str, application_name: str, pids: list[int]) -> int:
    """Terminate those of `pids` that are backends of `url`'s database named `application_name`
    (the server is shared by every test worker: never anyone else's); how many were."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        terminated: int = await connection.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid = ANY($1) AND datname = current_database() AND application_name = $2"
            " AND pid <> pg_backend_pid()",
            pids,
            application_name,
        )
    finally:
        await connection.close()
    return terminated


def migrate(settings: Settings, revision: str = "head") -> None:
    """Run `alembic upgrade` against the settings' database (call from a thread, not the loop)."""
    # Alembic logs at INFO while importing its plugins; quiet it before the (deferred) import,
    # or the lines land in the middle of the test report.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    config = Config(str(BACKEND_DIR / "alembic.ini"))
    config.attributes["settings"] = settings
    config.attributes["configure_logging"] = False
    command.upgrade(config, revision)


async def create_database(prefix: str) -> str:
    """A new, empty database; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[-1]
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def truncate_all(url: str) -> None:
    """Empty every table of the model (fast between tests; identities restart)."""
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


def create_migrated_database(prefix: str) -> str:
    """Synchronous helper for session fixtures: create a database and migrate it to head."""
    url = asyncio.run(create_database(prefix))
    # Explicit: a test pass may run with USE_EXTERNAL_POOLER=true, but this URL is direct.
    migrate(Settings(database_url=url, use_external_pooler=False, jwt_secret="x" * 40))
    return url
