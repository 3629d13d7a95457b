"""The production database path through a real transaction-mode pooler (PgBouncer).

Each test owns a PgBouncer with a small pool in front of the worker's database, so it can count
server connections, pin every client to one server connection, or restart the pooler.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.config import Settings
from app.database import Database
from app.main import create_app
from tests.conftest import make_settings
from tests.support.apps import client_for
from tests.support.database import asyncpg_dsn, tables_locked
from tests.support.factories import PASSWORD, auth, create_job, create_test, register_candidate
from tests.support.pgbouncer import PgBouncer
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

PoolerFactory = Callable[..., PgBouncer]


@pytest.fixture
def pooler() -> Iterator[PoolerFactory]:
    """Start private PgBouncers: `pooler(pool_size=5)`; all are stopped after the test."""
    started: list[PgBouncer] = []

    def start(**options: Any) -> PgBouncer:
        bouncer = PgBouncer(**options)
        started.append(bouncer)
        bouncer.start()
        return bouncer

    yield start
    for bouncer in started:
        bouncer.cleanup()


def _database_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def pooled_settings(
    tmp_path: Path, bouncer: PgBouncer, postgres_url: str, **overrides: Any
) -> Settings:
    """App settings for the worker's database through `bouncer`, as production sets them."""
    return make_settings(
        tmp_path, database_url=bouncer.url_for(postgres_url), use_external_pooler=True, **overrides
    )


@asynccontextmanager
async def pooled_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The web app on `settings`, its lifespan running."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def _run_load(work: Callable[[int], Awaitable[None]], clients: int) -> list[BaseException]:
    """Run `work(n)` for `clients` concurrent clients; the errors they raised."""
    results = await asyncio.gather(*(work(n) for n in range(clients)), return_exceptions=True)
    return [result for result in results if isinstance(result, BaseException)]


async def _prepared_statements_on_every_server(bouncer: PgBouncer, postgres_url: str) -> list[int]:
    """Prepared statements left on each of the pooler's server connections.

    Holding one open transaction per server connection at once pins each client to a different
    one, so every server connection is inspected.
    """
    connections = [
        await asyncpg.connect(asyncpg_dsn(bouncer.url_for(postgres_url)), statement_cache_size=0)
        for _ in range(bouncer.pool_size)
    ]
    try:
        transactions = [connection.transaction() for connection in connections]
        for transaction in transactions:
            await transaction.start()
        pids = [await c.fetchval("SELECT pg_backend_pid()") for c in connections]
        assert len(set(pids)) == bouncer.pool_size  # one client per server connection
        counts = [
            await c.fetchval("SELECT count(*) FROM pg_prepared_statements") for c in connections
        ]
        for transaction in transactions:
            await transaction.rollback()
        return counts
    finally:
        for connection in connections:
            await connection.close()


# A workload shaped like the app's: each client connection runs several short transactions
# and autocommit reads with a few statement shapes, concurrently with the others.
QUERIES = (
    "SELECT count(*) FROM users WHERE id > :n",
    "SELECT count(*) FROM jobs WHERE id <> :n",
)


async def _transactions_on_one_connection(engine: Any, n: int) -> None:
    async with engine.connect() as connection:
        for round_ in range(10):
            async with connection.begin():
                for query in QUERIES:
                    await connection.execute(text(query), {"n": n + round_})


async def test_asyncpg_statement_cache_breaks_through_the_pooler(
    pooler: PoolerFactory, postgres_url: str, database_url: str
) -> None:
    """The control: a default asyncpg engine (statement caches on) fails this load."""
    bouncer = pooler(pool_size=3)
    engine = create_async_engine(bouncer.url_for(postgres_url), poolclass=NullPool)
    try:
        errors = await _run_load(lambda n: _transactions_on_one_connection(engine, n), 10)
    finally:
        await engine.dispose()
    assert errors, "the load should have hit a statement prepared on another server connection"
    messages = " ".join(str(error) for error in errors)
    assert "prepared statement" in messages


async def test_our_engine_runs_the_same_load_and_leaves_nothing_on_the_server(
    tmp_path: Path, pooler: PoolerFactory, postgres_url: str, database_url: str
) -> None:
    """Ours: the same load, plus autocommit reads and the raw read pool, without an error, and
    no prepared statement is left behind on any server connection."""
    bouncer = pooler(pool_size=3)
    settings = pooled_settings(tmp_path, bouncer, postgres_url)
    database = Database.create(settings)
    await database.open_read_pool(settings, role="web")
    assert database.read_pool is not None
    read_pool = database.read_pool

    async def work(n: int) -> None:
        await _transactions_on_one_connection(database.engine, n)
        async with database.read_engine.connect() as connection:
            for query in QUERIES:
                await connection.execute(text(query), {"n": n})
        await read_pool.fetch("SELECT count(*) FROM jobs WHERE id > $1", n)

    try:
        errors = await _run_load(work, 10)
    finally:
        await database.dispose()
    assert errors == []
    assert await _prepared_statements_on_every_server(bouncer, postgres_url) == [0, 0, 0]


async def _count_server_connections(database: str) -> int:
    connection = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return count
    finally:
        await connection.close()


SLOW_PROFILE_UPDATES = """
CREATE FUNCTION slow_profile_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$;
CREATE TRIGGER slow_profile_update BEFORE UPDATE ON candidate_profiles
FOR EACH ROW EXECUTE FUNCTION slow_profile_update();
"""


async def test_fifty_concurrent_requests_share_five_server_connections(
    tmp_path: Path, pooler: PoolerFactory, postgres_url: str, database_url: str
) -> None:
    bouncer = pooler(pool_size=5)
    settings = pooled_settings(tmp_path, bouncer, postgres_url)
    async with pooled_app(settings) as app, client_for(app) as client:
        await create_job(app)
        tokens = [(await register_candidate(client))["access_token"] for _ in range(25)]
        setup = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            # Each profile update holds its server connection 50 ms, so 25 of them
            # saturate the pool and the rest of the burst has to queue in the pooler.
            await setup.execute(SLOW_PROFILE_UPDATES)
        finally:
            await setup.close()

        peak = 0
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, await _count_server_connections(_database_name(postgres_url)))
                await asyncio.sleep(0.005)

        async def request(i: int) -> tuple[int, float]:
            started = time.monotonic()
            token = tokens[i // 2]
            if i % 2:
                response = await client.patch(
                    "/api/profile", headers=auth(token), json={"summary": f"update {i}"}
                )
            else:
                response = await client.get("/api/jobs")
            return response.status_code, time.monotonic() - started

        sampler = asyncio.create_task(sample())
        try:
            outcomes = await asyncio.gather(*(request(i) for i in range(50)))
        finally:
            done.set()
            await sampler
    statuses = [status for status, _ in outcomes]
    assert statuses == [200] * 50
    # Waits are bounded by the pooler's queue, well inside its query_wait_timeout.
    assert max(duration for _, duration in outcomes) < bouncer.query_wait_timeout
    assert peak == 5, f"server connections peaked at {peak}, the pool has 5"


async def _show_timeouts(bouncer: PgBouncer, postgres_url: str) -> tuple[str, str]:
    """statement_timeout and lock_timeout on the pooler's (only) server connection."""
    connection = await asyncpg.connect(
        asyncpg_dsn(bouncer.url_for(postgres_url)), statement_cache_size=0
    )
    try:
        return (
            await connection.fetchval("SHOW statement_timeout"),
            await connection.fetchval("SHOW lock_timeout"),
        )
    finally:
        await connection.close()


async def test_statement_timeout_is_per_transaction_and_the_connection_comes_back_clean(
    tmp_path: Path, pooler: PoolerFactory, postgres_url: str, database_url: str
) -> None:
    # One server connection: the transaction after the timeout runs on the same one.
    bouncer = pooler(pool_size=1)
    settings = pooled_settings(
        tmp_path,
        bouncer,
        postgres_url,
        db_statement_timeout_ms=300,
        db_read_statement_timeout_ms=300,
    )
    async with pooled_app(settings) as app, client_for(app) as client:
        await create_job(app)
        token = (await register_candidate(client))["access_token"]
        # Inside a request's transaction the timeout is in force ...
        async with app.state.resources.database.sessionmaker() as session:
            assert await session.scalar(text("SHOW statement_timeout")) == "300ms"
            assert await session.scalar(text("SHOW lock_timeout")) == "5s"
        async with tables_locked(postgres_url, "candidate_profiles", "jobs"):
            started = time.monotonic()
            write = await client.patch(
                "/api/profile", headers=auth(token), json={"summary": "blocked"}
            )
            # The hot read runs on the raw read pool, outside any transaction.
            read = await client.get("/api/jobs")
            elapsed = time.monotonic() - started
        # ... and gone after it: nothing leaked onto the pooled server connection.
        assert await _show_timeouts(bouncer, postgres_url) == ("0", "0")
        after = await client.patch("/api/profile", headers=auth(token), json={"summary": "after"})
        listing = await client.get("/api/jobs")
    for response in (write, read):
        assert response.status_code == 504
        assert response.headers["retry-after"] == "2"
        assert response.json() == {
            "error": {
                "code": "database_timeout",
                "message": "The database did not answer in time; retry shortly.",
            }
        }
    assert elapsed < 0.3 * 2 + 5  # both ended at their budget, not at the lock's end
    assert after.status_code == 200 and after.json()["summary"] == "after"
    assert listing.status_code == 200 and len(listing.json()["items"]) == 1


async def test_the_admin_budget_stays_inside_its_transaction(
    tmp_path: Path, pooler: PoolerFactory, postgres_url: str, database_url: str
) -> None:
    # One server connection: what the report's transaction leaves behind, the next one sees.
    bouncer = pooler(pool_size=1)
    settings = pooled_settings(
        tmp_path,
        bouncer,
        postgres_url,
        db_statement_timeout_ms=2000,
        db_admin_statement_timeout_ms=45_000,
    )
    database = Database.create(settings)
    try:
        async with database.report_connection() as connection:
            report = await connection.scalar(text("SHOW statement_timeout"))
        async with database.session("default") as session:
            ordinary = await session.scalar(text("SHOW statement_timeout"))
    finally:
        await database.dispose()
    assert (report, ordinary) == ("45s", "2s")
    assert await _show_timeouts(bouncer, postgres_url) == ("0", "0")


async def _ledger_check(postgres_url: str) -> dict[str, Any]:
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        return {
            "emails": {row["email"] for row in await connection.fetch("SELECT email FROM users")},
            "users_without_profile": await connection.fetchval(
                "SELECT count(*) FROM users u LEFT JOIN candidate_profiles p ON p.user_id = u.id"
                " WHERE u.role = 'candidate' AND p.user_id IS NULL"
            ),
            "half_completed": await connection.fetchval(
                "SELECT count(*) FROM test_attempts WHERE (status = 'completed') <>"
                " (completed_at IS NOT NULL AND score IS NOT NULL AND max_score IS NOT NULL)"
            ),
            "answers": {
                (row["attempt_id"], row["question_id"])
                for row in await connection.fetch("SELECT attempt_id, question_id FROM answers")
            },
            "completed": {
                row["id"]
                for row in await connection.fetch(
                    "SELECT id FROM test_attempts WHERE status = 'completed'"
                )
            },
        }
    finally:
        await connection.close()


async def test_a_pooler_restart_under_load_fails_cleanly_and_recovers(
    tmp_path: Path,
    pooler: PoolerFactory,
    postgres_url: str,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bouncer = pooler(pool_size=5)
    settings = pooled_settings(tmp_path, bouncer, postgres_url, db_statement_timeout_ms=5000)
    registered: list[str] = []
    answered: list[tuple[int, int]] = []
    completed: list[int] = []
    refused: list[httpx.Response] = []
    durations: list[float] = []
    async with pooled_app(settings) as app:
        test, questions = await create_test(app, questions=3)
        async with client_for(app) as client:
            takers = []
            for _ in range(6):
                token = (await register_candidate(client))["access_token"]
                start = await client.post(
                    "/api/tests/start", headers=auth(token), json={"test_id": test.id}
                )
                takers.append((token, start.json()["attempt_id"]))
            stop = asyncio.Event()

            def record(response: httpx.Response, started: float) -> bool:
                durations.append(time.monotonic() - started)
                if response.status_code >= 500:
                    refused.append(response)
                return response.is_success

            async def sign_ups(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    email = f"restart-{worker}-{n}@example.com"
                    n += 1
                    started = time.monotonic()
                    response = await client.post(
                        "/api/auth/register",
                        json={"email": email, "password": PASSWORD, "full_name": "R"},
                    )
                    if record(response, started):
                        registered.append(email)

            async def test_taker(token: str, attempt_id: int) -> None:
                for question in questions:
                    while not stop.is_set():
                        started = time.monotonic()
                        response = await client.post(
                            f"/api/tests/{attempt_id}/answer",
                            headers=auth(token),
                            json={"question_id": question.id, "answer_text": "B"},
                        )
                        if record(response, started):
                            answered.append((attempt_id, question.id))
                            break
                while not stop.is_set():
                    started = time.monotonic()
                    response = await client.post(
                        "/api/tests/complete", headers=auth(token), json={"attempt_id": attempt_id}
                    )
                    if record(response, started):
                        completed.append(attempt_id)
                        return

            load = [asyncio.create_task(sign_ups(w)) for w in range(4)]
            load += [asyncio.create_task(test_taker(*taker)) for taker in takers[:3]]

            async def signed_up(count: int) -> bool:
                return len(registered) >= count

            async def all_completed() -> bool:
                return len(set(completed)) == len(takers)

            await wait_until(lambda: signed_up(5), within=10, what="load to run")
            caplog.clear()
            bouncer.kill()
            await asyncio.sleep(0.5)
            bouncer.start()
            # The remaining takers start after the restart: answering and completing work again.
            load += [asyncio.create_task(test_taker(*taker)) for taker in takers[3:]]
            recovered_at = len(registered)
            await wait_until(
                lambda: signed_up(recovered_at + 5),
                within=10,
                what="sign-ups to succeed after the restart",
            )
            await wait_until(all_completed, within=20, what="every attempt to complete")
            stop.set()
            await asyncio.gather(*load)

    state = await _ledger_check(postgres_url)
    # Every acknowledged write is there; nothing is half-written.
    assert set(registered) <= state["emails"]
    assert state["users_without_profile"] == 0
    assert set(answered) <= state["answers"]
    assert set(completed) == state["completed"] == {attempt for _, attempt in takers}
    assert state["half_completed"] == 0
    # In-flight requests failed with the shared shape, retryable, within their time budget.
    assert refused, "the restart should have cut some requests"
    for response in refused:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "database_unavailable"
    assert max(durations) < 5 + 5
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert tracebacks == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
