"""Health routes against real Postgres and Redis, including dead and hung dependencies."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy import event

from app.main import create_app
from tests.conftest import POOLED_RUN, TEST_JWT_SECRET, make_settings
from tests.support.apps import AppFactory, client_for
from tests.support.factories import admin_token, auth, candidate_token
from tests.support.redis_server import RedisServer, free_port
from tests.support.uvicorn_processes import UvicornProcesses

# Whatever goes wrong, probe bodies must not leak where dependencies live or what failed.
LEAKS = ("127.0.0.1", "localhost", "postgres", "hp_test", "Error", "refused", "Traceback")


def assert_no_leaks(body: str) -> None:
    for fragment in LEAKS:
        assert fragment not in body, f"{fragment!r} leaked into {body}"


async def test_liveness_answers_even_when_every_dependency_is_down(
    app_with: AppFactory, stopped_redis: RedisServer
) -> None:
    dead_db = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    async with (
        app_with(database_url=dead_db, redis_url=stopped_redis.url) as app,
        client_for(app) as client,
    ):
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_each_dependency_with_latency(
    app_with: AppFactory, redis_url: str
) -> None:
    async with app_with(redis_url=redis_url) as app, client_for(app) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    for name in ("database", "redis"):
        assert body["checks"][name]["status"] == "ok"
        assert body["checks"][name]["latency_ms"] >= 0


async def test_ready_without_redis_configured_is_ready(app_with: AppFactory) -> None:
    async with app_with() as app, client_for(app) as client:
        body = (await client.get("/health/ready")).json()
    assert body["status"] == "ready"
    assert body["checks"]["redis"] == {"status": "disabled"}


async def test_database_down_is_not_ready(app_with: AppFactory, redis_url: str) -> None:
    dead_db = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/hp_test_gone"
    async with (
        app_with(database_url=dead_db, redis_url=redis_url) as app,
        client_for(app) as client,
    ):
        response = await client.get("/health/ready")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert error["checks"]["database"]["status"] == "down"
    assert error["checks"]["redis"]["status"] == "ok"
    assert_no_leaks(response.text)


async def test_a_full_pool_is_degraded_not_unready(app_with: AppFactory) -> None:
    """Every connection of the pool taken (a burst, a lock): the database still answers on a
    one-off connection, so the instance says degraded instead of leaving the load balancer."""
    async with (
        app_with(db_pool_size=2, db_pooler_client_pool_size=2, health_ready_cache_seconds=0) as app,
        client_for(app) as client,
    ):
        engine = app.state.resources.database.engine
        async with engine.connect(), engine.connect():
            busy = await client.get("/health/ready")
        after = await client.get("/health/ready")
    assert busy.status_code == 200
    body = busy.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] == "busy"
    assert body["checks"]["database"]["latency_ms"] >= 0
    assert after.json()["status"] == "ready"


async def test_a_full_read_pool_is_degraded_not_unready(app_with: AppFactory) -> None:
    async with (
        app_with(db_read_pool_size=1) as app,
        client_for(app) as client,
        app.state.resources.database.read_pool.acquire(),
    ):
        busy = await client.get("/health/ready")
    assert busy.status_code == 200
    assert busy.json()["status"] == "degraded"
    assert busy.json()["checks"]["database"]["status"] == "busy"


async def test_redis_down_is_degraded_not_unready(
    app_with: AppFactory, stopped_redis: RedisServer
) -> None:
    async with app_with(redis_url=stopped_redis.url) as app, client_for(app) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "down"
    assert_no_leaks(response.text)


async def test_redis_recovery_returns_to_ready(app_with: AppFactory) -> None:
    server = RedisServer()
    server.start()
    try:
        async with (
            app_with(
                redis_url=server.url, redis_backoff_seconds=0.05, health_ready_cache_seconds=0
            ) as app,
            client_for(app) as client,
        ):
            server.stop()
            assert (await client.get("/health/ready")).json()["status"] == "degraded"
            server.start()
            assert (await client.get("/health/ready")).json()["status"] == "ready"
    finally:
        server.cleanup()


async def test_hung_dependencies_cannot_hang_the_probe(
    app_with: AppFactory, silent_server: int
) -> None:
    hung_db = f"postgresql+asyncpg://postgres@127.0.0.1:{silent_server}/hung"
    hung_redis = f"redis://127.0.0.1:{silent_server}/0"
    async with (
        app_with(
            database_url=hung_db, redis_url=hung_redis, health_check_timeout_seconds=0.3
        ) as app,
        client_for(app) as client,
    ):
        # A generous deadline: without the probe's own timeouts this would wait far longer.
        async with asyncio.timeout(20):
            response = await client.get("/health/ready")
    assert response.status_code == 503
    checks = response.json()["error"]["checks"]
    assert checks["database"]["status"] == "down"
    assert checks["redis"]["status"] == "down"


async def test_draining_flips_readiness_but_serves_what_arrives(app_with: AppFactory) -> None:
    """Draining (the server stopped accepting): requests that reached the process are served,
    on connections that close afterwards; readiness says 503."""
    async with app_with() as app, client_for(app) as client:
        assert (await client.get("/health/ready")).status_code == 200
        app.state.drain.start()
        ready = await client.get("/health/ready")
        live = await client.get("/health")
        work = await client.get("/api/jobs")
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "draining"
    assert ready.headers["connection"] == "close"
    assert live.status_code == 200
    assert work.status_code == 200
    assert work.headers["connection"] == "close"


async def test_closing_refuses_new_work_in_the_shared_shape(app_with: AppFactory) -> None:
    async with app_with() as app, client_for(app) as client:
        app.state.drain.refuse_new()
        ready = await client.get("/health/ready")
        work = await client.get("/api/jobs")
    assert ready.status_code == 503
    assert work.status_code == 503
    assert work.headers["connection"] == "close"
    assert work.headers["retry-after"] == "1"
    assert work.json() == {
        "error": {
            "code": "shutting_down",
            "message": "The server is restarting. Retry the request.",
        }
    }


async def test_in_flight_request_finishes_before_resources_close(
    tmp_path: Path, database_url: str
) -> None:
    """Shutdown starting mid-request: the lifespan waits for the request, which still has its
    engine and completes (with Connection: close); only then are resources closed."""
    app = create_app(make_settings(tmp_path, database_url=database_url))
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_route() -> dict[str, str]:
        entered.set()
        await release.wait()
        async with app.state.resources.database.read_engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
        return {"done": "yes"}

    app.add_api_route("/ops-test/slow", slow_route)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    async with client_for(app) as client:
        request = asyncio.create_task(client.get("/ops-test/slow"))
        await entered.wait()
        shutdown = asyncio.create_task(lifespan.__aexit__(None, None, None))
        for _ in range(1000):  # the shutdown task starts refusing on its first step
            if app.state.drain.refusing:
                break
            await asyncio.sleep(0)
        assert app.state.drain.refusing
        refused = await client.get("/api/jobs")
        shutdown_waited = not shutdown.done()
        release.set()
        response = await request
        await shutdown
    assert shutdown_waited
    assert refused.status_code == 503
    assert response.status_code == 200
    assert response.json() == {"done": "yes"}
    assert response.headers["connection"] == "close"


async def test_detailed_for_operators(app_with: AppFactory, redis_url: str) -> None:
    async with app_with(redis_url=redis_url) as app, client_for(app) as client:
        response = await client.get("/health/detailed")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert body["status"] == "ready"
    assert body["version"] == "1.0.0"
    assert body["environment"] == "development"
    assert body["uptime_seconds"] >= 0
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["redis"] == {"mode": "standalone", "available": True}
    assert {"gemini", "pinecone"} <= set(body["circuit_breakers"])
    assert body["circuit_breakers"]["gemini"]["state"] == "closed"
    # Behind the transaction pooler: a small pool of pooler connections.
    assert body["database_pool"]["size"] == (10 if POOLED_RUN else 20)
    assert body["database_pool"]["checked_out"] == 0
    # Each area's share of the pool (20 direct, 10 pooler connections) and its use.
    assert body["database_pool"]["areas"] == (
        {
            "assessments": {"limit": 6, "in_use": 0},
            "admin": {"limit": 3, "in_use": 0},
            "default": {"limit": 6, "in_use": 0},
        }
        if POOLED_RUN
        else {
            "assessments": {"limit": 12, "in_use": 0},
            "admin": {"limit": 6, "in_use": 0},
            "default": {"limit": 12, "in_use": 0},
        }
    )
    assert "queues" in body
    assert_no_leaks(response.text)


async def test_detailed_is_not_public(app_with: AppFactory) -> None:
    async with (
        app_with() as app,
        client_for(app) as local,
        client_for(app, "203.0.113.7") as remote,
    ):
        anonymous = await remote.get("/health/detailed")
        candidate = await remote.get("/health/detailed", headers=auth(await candidate_token(local)))
        admin = await remote.get("/health/detailed", headers=auth(await admin_token(app, local)))
        forged = await remote.get("/health/detailed", headers=auth("not-a-token"))
    assert anonymous.status_code == 403
    assert anonymous.json()["error"]["code"] == "forbidden"
    assert candidate.status_code == 403
    assert admin.status_code == 200
    assert forged.status_code == 401


async def test_detailed_allowlist_reads_the_client_through_trusted_proxies(
    app_with: AppFactory,
) -> None:
    """Behind ALB + nginx (2 hops) the peer is nginx on loopback: the client is in the header."""
    async with (
        app_with(trusted_proxy_count=2, ops_allowed_networks="10.0.0.0/8") as app,
        client_for(app) as nginx,
    ):
        outside = await nginx.get(
            "/health/detailed", headers={"X-Forwarded-For": "203.0.113.7, 10.0.3.4"}
        )
        spoofed = await nginx.get(
            "/health/detailed",
            headers={"X-Forwarded-For": "10.9.9.9, 203.0.113.7, 10.0.3.4"},
        )
        inside = await nginx.get(
            "/health/detailed", headers={"X-Forwarded-For": "10.1.2.3, 10.0.3.4"}
        )
    assert outside.status_code == 403
    assert spoofed.status_code == 403
    assert inside.status_code == 200


async def test_detailed_allowlist_honours_trusted_proxy_networks(app_with: AppFactory) -> None:
    """With TRUSTED_PROXY_CIDRS (no hop count) the client is the right-most untrusted entry, as
    for the rate limiter: traffic relayed by a loopback nginx is not loopback traffic."""
    async with (
        app_with(
            trusted_proxy_cidrs=["127.0.0.1/32", "10.0.0.0/8"],
            ops_allowed_networks="127.0.0.1/32,::1/128",
        ) as app,
        client_for(app) as nginx,
    ):
        relayed = await nginx.get(
            "/health/detailed", headers={"X-Forwarded-For": "203.0.113.7, 10.0.3.4"}
        )
        direct = await nginx.get("/health/detailed")
    assert relayed.status_code == 403
    assert direct.status_code == 200


PROBES = 200


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, so its command counts are the app's."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


def redis_pings(server: RedisServer) -> int:
    """PING commands the server has executed (INFO commandstats)."""
    client = redis.Redis(port=server.port)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


@contextmanager
def database_probes(app: FastAPI) -> Iterator[list[str]]:
    """The SQL statements the app's read engine sends while the block runs."""
    statements: list[str] = []
    engine = app.state.resources.database.read_engine.sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_probes_share_one_check_per_interval(
    app_with: AppFactory, private_redis: RedisServer
) -> None:
    """200 probes, concurrent then one after another, within one interval: one database query
    and one Redis PING in all."""
    async with (
        app_with(redis_url=private_redis.url, health_ready_cache_seconds=30) as app,
        client_for(app) as client,
    ):
        pings_before = redis_pings(private_redis)
        with database_probes(app) as statements:
            concurrent = await asyncio.gather(
                *(client.get("/health/ready") for _ in range(PROBES // 2))
            )
            sequential = [await client.get("/health/ready") for _ in range(PROBES // 2)]
        pings = redis_pings(private_redis) - pings_before
    responses = concurrent + sequential
    assert [response.status_code for response in responses] == [200] * PROBES
    assert {response.json()["status"] for response in responses} == {"ready"}
    assert statements == ["SELECT 1"]
    assert pings == 1


async def test_without_the_interval_every_probe_checks(
    app_with: AppFactory, private_redis: RedisServer
) -> None:
    """The control for the counts above: with HEALTH_READY_CACHE_SECONDS=0 each probe one after
    another queries the database and pings Redis."""
    async with (
        app_with(redis_url=private_redis.url, health_ready_cache_seconds=0) as app,
        client_for(app) as client,
    ):
        pings_before = redis_pings(private_redis)
        with database_probes(app) as statements:
            for _ in range(20):
                assert (await client.get("/health/ready")).status_code == 200
        pings = redis_pings(private_redis) - pings_before
    assert statements == ["SELECT 1"] * 20
    assert pings == 20


async def test_probes_across_processes_check_once_per_process(
    tmp_path: Path, database_url: str, private_redis: RedisServer
) -> None:
    """Two uvicorn processes, 200 concurrent probes between them: one PING per process."""
    env = {
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATABASE_URL": database_url,
        "REDIS_URL": private_redis.url,
        "DATA_DIR": str(tmp_path / "server-data"),
        "RATE_LIMIT_ENABLED": "false",
        "CACHE_ENABLED": "false",
        "HEALTH_READY_CACHE_SECONDS": "30",
        "LOG_LEVEL": "WARNING",
    }
    servers = UvicornProcesses("app.main:app", 2, env)
    await asyncio.to_thread(servers.start)
    try:
        pings_before = redis_pings(private_redis)
        limits = httpx.Limits(max_connections=PROBES)
        async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
            responses = await asyncio.gather(
                *(client.get(f"{servers.urls[index % 2]}/health/ready") for index in range(PROBES))
            )
        pings = redis_pings(private_redis) - pings_before
    finally:
        await asyncio.to_thread(servers.stop)
    assert [response.status_code for response in responses] == [200] * PROBES
    assert pings == 2
