"""Shared fixtures: real Postgres and Redis, one private instance of each per test worker."""

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from pydantic import TypeAdapter

from app.config import Settings
from app.main import create_app
from tests.support.apps import AppFactory
from tests.support.database import create_migrated_database, drop_database, truncate_all
from tests.support.fake_upstream import FakeUpstream
from tests.support.pgbouncer import PgBouncer
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import RedisClusterNodes, RedisSentinelSetup

# SQS fixtures (moto server, queues, AWS credentials) for the worker and queue tests.
pytest_plugins = ("tests.support.sqs_fixtures",)

TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"

# The production database path: `USE_EXTERNAL_POOLER=true scripts/test.sh ...` (the test command's
# second pass) sends every app the tests build, in-process or as a server process, through a
# transaction-mode PgBouncer with the pooler settings, as Supavisor's port 6543 would.
POOLED_RUN: bool = TypeAdapter(bool).validate_python(
    os.environ.get("USE_EXTERNAL_POOLER") or "false"
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server process owned by this test worker."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of an empty Redis; emptied again after the test."""
    if redis_server.process is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    if redis_server.process is None:  # a fault test stopped it
        redis_server.start()
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A Postgres database for this test worker, migrated to head by Alembic."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    url = create_migrated_database(f"hp_test_{worker}")
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """A transaction-mode PgBouncer owned by this test worker (5 server connections per
    database), in front of the local Postgres."""
    pooler = PgBouncer(pool_size=5)
    pooler.start()
    yield pooler
    pooler.cleanup()


@pytest.fixture
async def database_url(postgres_url: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The URL of the worker's database for the app under test (through PgBouncer in the pooled
    run); the database is emptied after each test. Tests that inspect rows themselves connect
    to `postgres_url` (direct)."""
    if POOLED_RUN:
        pooler: PgBouncer = request.getfixturevalue("pgbouncer")
        yield pooler.url_for(postgres_url)
    else:
        yield postgres_url
    await truncate_all(postgres_url)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Test settings: fast password hashing, no rate or concurrency limits and no login
    shedding unless a test asks for them (bursts of concurrent requests are common here)."""
    values: dict[str, Any] = {
        "environment": "development",
        "jwt_secret": TEST_JWT_SECRET,
        "data_dir": tmp_path / "data",
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        "password_hash_queue_max": 1000,
        "rate_limit_enabled": False,
        "concurrency_limit_enabled": False,
        "cache_enabled": False,
        "redis_url": None,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The web app with its lifespan running."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    """The process that plays Gemini, Pinecone and Cloudinary, one per test worker."""
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    """The fake upstream, healthy with counters at zero."""
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def app_with(tmp_path: Path, database_url: str) -> AppFactory:
    """Build the web app with setting overrides (Postgres by default) and run its lifespan."""

    @asynccontextmanager
    async def build(**overrides: Any) -> AsyncIterator[FastAPI]:
        values: dict[str, Any] = {"database_url": database_url, **overrides}
        settings: Settings = make_settings(tmp_path, **values)
        application = create_app(settings)
        async with application.router.lifespan_context(application):
            yield application

    return build


@pytest.fixture
def stopped_redis() -> Iterator[RedisServer]:
    """A private redis-server that was started and then stopped: its port refuses connections."""
    server = RedisServer()
    server.start()
    server.stop()
    yield server
    server.cleanup()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers: a hung dependency."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port: int = listener.getsockname()[1]
        yield port


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A private 3-master Redis Cluster."""
    cluster = RedisClusterNodes(masters=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="module")
def redis_sentinel() -> Iterator[RedisSentinelSetup]:
    """A private master watched by one Sentinel."""
    setup = RedisSentinelSetup()
    try:
        setup.start()
        yield setup
    finally:
        setup.cleanup()
