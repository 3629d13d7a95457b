"""A COMMIT whose connection is lost: the outcome is looked up, not guessed (Database.commit).

The app reaches Postgres through a TCP forwarder that can lose what passes through it: the
COMMIT's answer (the server committed), or the COMMIT itself (the server never got it). Lookups
go to the direct URL, as DATABASE_DIRECT_URL does in production.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import event, update

from app.database import Database
from app.errors import DatabaseUnavailable
from app.models import Job
from tests.conftest import make_settings
from tests.support.database import asyncpg_dsn
from tests.support.tcp_proxy import TcpProxy

POSTGRES = "127.0.0.1:5432"


@pytest.fixture
async def proxied(
    tmp_path: Path, postgres_url: str, database_url: str
) -> AsyncIterator[tuple[Database, TcpProxy]]:
    """A Database reaching Postgres through the forwarder (`database_url` empties it after)."""
    proxy = TcpProxy(target_port=5432)
    proxy.up()
    direct = postgres_url
    settings = make_settings(
        tmp_path,
        database_url=direct.replace(f"@{POSTGRES}/", f"@127.0.0.1:{proxy.port}/"),
        database_direct_url=direct,
    )
    database = Database.create(settings)
    try:
        yield database, proxy
    finally:
        await database.dispose()
        proxy.down()


async def titles(url: str) -> list[str]:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return [row["title"] for row in await connection.fetch("SELECT title FROM jobs")]
    finally:
        await connection.close()


def job(title: str) -> Job:
    return Job(
        title=title,
        company="Acme",
        location="Remote",
        job_type="Full Time",
        description="A job.",
        skills=[],
        active=True,
    )


async def lose_during_commit(database: Database, proxy: TcpProxy, direction: str) -> None:
    """Write a job and commit it; from the COMMIT on, `direction` is lost and the connection
    drops half a second later."""
    loop = asyncio.get_running_loop()
    cuts: list[asyncio.TimerHandle] = []

    def committing(_connection: object) -> None:
        proxy.mute(direction)
        cuts.append(loop.call_later(0.5, proxy.down))

    event.listen(database.engine.sync_engine, "commit", committing)
    try:
        async with database.sessionmaker() as session:
            session.add(job(f"lost-{direction}"))
            await session.flush()
            await database.commit(session)
    finally:
        event.remove(database.engine.sync_engine, "commit", committing)
        for cut in cuts:
            cut.cancel()


async def test_a_commit_whose_answer_was_lost_is_a_success(
    proxied: tuple[Database, TcpProxy], postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database, proxy = proxied
    await lose_during_commit(database, proxy, "to_client")
    assert await titles(postgres_url) == ["lost-to_client"]
    assert "the COMMIT's answer was lost; it committed" in caplog.text


async def test_a_commit_that_never_arrived_is_refused(
    proxied: tuple[Database, TcpProxy], postgres_url: str
) -> None:
    database, proxy = proxied
    with pytest.raises(DatabaseUnavailable) as refused:
        await lose_during_commit(database, proxy, "to_server")
    assert refused.value.code == "database_unavailable"
    assert await titles(postgres_url) == []


async def test_a_transaction_that_wrote_nothing_pays_no_lookup(
    proxied: tuple[Database, TcpProxy],
) -> None:
    database, _ = proxied
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    async with database.sessionmaker() as session:
        await session.get(Job, 1)
        await database.commit(session)
    async with database.sessionmaker() as session:
        await session.execute(update(Job).where(Job.id == 1).values(title="x"))
        await database.commit(session)
    lookups = [s for s in statements if "txid_current_if_assigned" in s]
    assert len(lookups) == 1
