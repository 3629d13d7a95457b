"""The leader-only migration command (.platform/scripts/migrate.sh), run as EB runs it: from the
bundle root, with the tier's environment properties, against a real, empty Postgres database.

EB runs it on one instance of every environment; only the web environment may migrate. Two
deploys migrating at once are covered by tests/database/test_migrations.py (advisory lock).
"""

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from tests.deploy.eb_bundle import get_config_stand_in, tier_options
from tests.support.database import (
    BACKEND_DIR,
    asyncpg_dsn,
    create_database,
    drop_database,
)
from tests.support.gunicorn_server import REPO_ROOT
from tests.support.redis_server import free_port

pytestmark = pytest.mark.slow

MIGRATE = REPO_ROOT / ".platform" / "scripts" / "migrate.sh"
HEAD = ScriptDirectory.from_config(Config(str(BACKEND_DIR / "alembic.ini"))).get_current_head()
# Interpreter start, imports and every migration of an empty database, on a loaded machine.
MIGRATE_SECONDS = 120


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    url = await create_database("hp_migrate_command")
    yield url
    await drop_database(url)


def run_migrate(
    tmp_path: Path, role: str | None, direct_url: str
) -> subprocess.CompletedProcess[str]:
    """migrate.sh with the tier's bundle settings (the transaction pooler on) plus what DEPLOY.md
    sets per environment: DATABASE_URL leads to a pooler where nothing listens, so only
    DATABASE_DIRECT_URL can be migrated."""
    tier_env = tier_options(role or "web")["aws:elasticbeanstalk:application:environment"]
    env = {name: str(value) for name, value in tier_env.items()}
    env.update(
        PATH=os.environ["PATH"],
        JWT_SECRET="q3Vx9LkP0s7Zr2mB8eYt4Wn6Hc1Ju5Df0Ga3Ko9Si2Xl7Rv4Pb8Ez1Cw6Ny5Tq0Mh",
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres",
        DATABASE_DIRECT_URL=direct_url,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        DATA_DIR=str(tmp_path / "data"),
        EB_GET_CONFIG=str(get_config_stand_in(tmp_path, role)),
        # The platform's virtualenv: this interpreter's.
        EB_APP_VENV=str(Path(sys.executable).parent.parent),
    )
    return subprocess.run(
        ["bash", str(MIGRATE)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=MIGRATE_SECONDS,
    )


async def revisions(url: str) -> list[str] | None:
    """The database's alembic revisions, None without an alembic_version table."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        if await connection.fetchval("SELECT to_regclass('public.alembic_version')") is None:
            return None
        return [
            row["version_num"]
            for row in await connection.fetch("SELECT version_num FROM alembic_version")
        ]
    finally:
        await connection.close()


async def test_web_leader_migrates_through_the_direct_connection(
    tmp_path: Path, empty_database: str
) -> None:
    result = run_migrate(tmp_path, "web", empty_database)
    assert result.returncode == 0, result.stderr
    assert "database migrated to head" in result.stdout
    assert await revisions(empty_database) == [HEAD]


async def test_worker_leader_leaves_the_database_alone(tmp_path: Path, empty_database: str) -> None:
    result = run_migrate(tmp_path, "worker", empty_database)
    assert result.returncode == 0, result.stderr
    assert "no migrations" in result.stdout
    assert await revisions(empty_database) is None


async def test_without_a_role_the_deployment_stops(tmp_path: Path, empty_database: str) -> None:
    result = run_migrate(tmp_path, None, empty_database)
    assert result.returncode == 1
    assert "HIRING_PRO_ROLE" in result.stderr
    assert await revisions(empty_database) is None
