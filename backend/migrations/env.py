"""Alembic environment: runs migrations over the app's async engine (Postgres or SQLite)."""

import asyncio
from collections.abc import Callable
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.config import Settings, get_settings
from app.config.settings import MIGRATIONS_LOCK_KEY
from app.database import create_engine
from app.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _include_object_for(dialect: str) -> Callable[..., bool]:
    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        # Indexes declared with .ddl_if(dialect=...) exist only on that dialect.
        condition = getattr(obj, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)

    return include_object


def _run(connection: Connection) -> None:
    context.configure(
        include_object=_include_object_for(connection.dialect.name),
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    # On Postgres all migrations run in this one transaction (transactional DDL, alembic's default
    # without transaction_per_migration). Concurrent deploys may start `alembic upgrade` together:
    # the lock, taken before alembic reads the current revision and released at commit, makes the
    # second wait, then see head and do nothing, instead of racing to create the same tables.
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATIONS_LOCK_KEY}
            )
        context.run_migrations()


def _direct_settings(settings: Settings) -> Settings:
    """The settings of a plain direct connection for DDL, never the transaction pooler."""
    url = settings.migrations_url
    if url is None:
        raise SystemExit(
            "USE_EXTERNAL_POOLER is on, so migrations need DATABASE_DIRECT_URL: a direct or "
            "session-mode connection (e.g. Supavisor port 5432), never the transaction pooler"
        )
    # No statement or lock timeout: DDL on a big table, or waiting for a concurrent migrator's
    # advisory lock, may take longer than a request's budget; the deploy command's timeout
    # bounds it.
    return settings.model_copy(
        update={
            "database_url": url,
            "use_external_pooler": False,
            "db_statement_timeout_ms": 0,
            "db_lock_timeout_ms": 0,
        }
    )


async def _run_async() -> None:
    # Tests pass their own settings; otherwise the environment's.
    settings = _direct_settings(config.attributes.get("settings") or get_settings())
    engine = create_engine(settings, role="migrations")
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
asyncio.run(_run_async())
