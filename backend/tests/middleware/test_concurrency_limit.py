"""The concurrency limit middleware: identities, refusals, and leases that end with their request
however it ends (completion, exception, cancellation, client disconnect), in-process and across
two uvicorn processes sharing one Redis."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.types import Message

from app.config import Settings
from app.config.rate_limits import DEFAULT_TIERS, RateLimitTier
from tests.middleware.concurrency_app import build_concurrency_app
from tests.middleware.rate_limiter.helpers import JWT_SECRET, make_token
from tests.support.apps import AppFactory, client_for
from tests.support.redis_server import RedisServer
from tests.support.redis_service import patient_redis_settings
from tests.support.uvicorn_processes import UvicornProcesses
from tests.support.wait import LOADED_MACHINE_MARGIN, wait_until

USER_LIMIT = 4
ADDRESS_LIMIT = 6
CLIENT = "198.51.100.7"
# Every request of these tests ends in seconds; leases must not expire under them.
LEASE_TTL_SECONDS = 300
REQUEST_TIMEOUT = 60.0


def limit_settings(tmp_path: Path, redis_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "concurrency_limit_per_user": USER_LIMIT,
        "concurrency_limit_per_address": ADDRESS_LIMIT,
        "concurrency_lease_ttl_seconds": LEASE_TTL_SECONDS,
        "rate_limit_expected_processes": 1,
        **overrides,
    }
    return patient_redis_settings(tmp_path, redis_url, **values)


@asynccontextmanager
async def running_app(settings: Settings, directory: Path) -> AsyncIterator[Starlette]:
    app = build_concurrency_app(settings, directory)
    async with app.router.lifespan_context(app):
        yield app


def in_process_client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, client=(CLIENT, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60)


def bearer(user_id: int, **token_options: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(str(user_id), **token_options)}"}


def started_count(directory: Path, name: str) -> int:
    path = directory / f"{name}.started"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def release(directory: Path, name: str) -> None:
    (directory / f"{name}.release").touch()


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {
        "error": {
            "code": "too_many_concurrent_requests",
            "message": "Too many requests in progress at once. Retry when one has finished.",
            "retry_after": 1,
        }
    }


async def hold_requests(
    http: httpx.AsyncClient,
    urls: list[str],
    directory: Path,
    name: str,
    count: int,
    headers: dict[str, str],
) -> tuple[list[asyncio.Task[httpx.Response]], list[httpx.Response]]:
    """Send `count` concurrent /hold requests (round robin over `urls`) and wait until each was
    either answered or started; the pending ones and the answers."""
    tasks = [
        asyncio.create_task(
            http.get(f"{urls[n % len(urls)]}/hold", params={"name": name}, headers=headers)
        )
        for n in range(count)
    ]

    async def every_request_decided() -> bool:
        return sum(task.done() for task in tasks) + started_count(directory, name) >= count

    await wait_until(every_request_decided, within=REQUEST_TIMEOUT, what="every request decided")
    answered = [task.result() for task in tasks if task.done()]
    return [task for task in tasks if not task.done()], answered


def no_key(store: redis.Redis, key: str) -> Callable[[], Awaitable[bool]]:
    """A condition for wait_until: `key` is gone (its releases are sent on a later loop turn)."""

    async def gone() -> bool:
        return store.exists(key) == 0

    return gone


async def all_released(store: redis.Redis) -> None:
    async def no_leases() -> bool:
        return store.keys("cl:*") == []

    await wait_until(no_leases, within=1, what="every lease to be released")


# In-process: identities, refusals, exemptions and every way a request can end.


async def test_a_user_and_an_address_each_get_their_own_limit(
    tmp_path: Path, redis_url: str
) -> None:
    store = redis.Redis.from_url(redis_url)
    async with (
        running_app(limit_settings(tmp_path, redis_url), tmp_path) as app,
        in_process_client(app) as http,
    ):
        user, user_answers = await hold_requests(
            http, [""], tmp_path, "user", USER_LIMIT + 3, bearer(7)
        )
        # A forged token (wrong key) is no identity: the request counts for its address.
        address, address_answers = await hold_requests(
            http, [""], tmp_path, "address", ADDRESS_LIMIT + 2, bearer(7, key="k" * 64)
        )
        assert (len(user), len(address)) == (USER_LIMIT, ADDRESS_LIMIT)
        for response in user_answers + address_answers:
            assert_refused(response)
        assert store.zcard("cl:{u:7}") == USER_LIMIT
        assert store.zcard(f"cl:{{ip:{CLIENT}}}") == ADDRESS_LIMIT
        # Exempt paths pass whatever the identity holds.
        assert (await http.get("/health", headers=bearer(7))).status_code == 200

        release(tmp_path, "user")
        release(tmp_path, "address")
        answers = await asyncio.gather(*user, *address)
        await all_released(store)
    assert [response.status_code for response in answers] == [200] * len(answers)
    store.close()


async def test_without_redis_the_limit_is_counted_in_process(tmp_path: Path) -> None:
    async with (
        running_app(limit_settings(tmp_path, None), tmp_path) as app,
        in_process_client(app) as http,
    ):
        pending, answers = await hold_requests(
            http, [""], tmp_path, "local", USER_LIMIT + 2, bearer(8)
        )
        assert len(pending) == USER_LIMIT and len(answers) == 2
        for response in answers:
            assert_refused(response)
        release(tmp_path, "local")
        await asyncio.gather(*pending)
        # Every lease was given back: the full limit is free again.
        pending, answers = await hold_requests(
            http, [""], tmp_path, "local-again", USER_LIMIT, bearer(8)
        )
        assert (len(pending), answers) == (USER_LIMIT, [])
        release(tmp_path, "local-again")
        await asyncio.gather(*pending)


def refusals(identity: str, source: str) -> float:
    labels = {"identity": identity, "outcome": "refused", "source": source}
    return REGISTRY.get_sample_value("hiringpro_concurrency_limit_decisions_total", labels) or 0.0


async def test_with_redis_down_each_process_keeps_its_share(tmp_path: Path) -> None:
    server = RedisServer()
    server.start()
    settings = limit_settings(tmp_path, server.url, rate_limit_expected_processes=2)
    try:
        async with running_app(settings, tmp_path) as app, in_process_client(app) as http:
            server.stop()
            before = refusals("user", "fallback")
            pending, answers = await hold_requests(
                http, [""], tmp_path, "fallback", USER_LIMIT, bearer(9)
            )
            assert len(pending) == USER_LIMIT // 2
            for response in answers:
                assert_refused(response)
            assert refusals("user", "fallback") - before == len(answers)
            release(tmp_path, "fallback")
            await asyncio.gather(*pending)
    finally:
        server.cleanup()


def asgi_request(path: str, name: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The scope of a request driven straight through the ASGI interface."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": f"name={name}".encode(),
        "root_path": "",
        "headers": headers,
        "client": (CLIENT, 40000),
        "server": ("testserver", 80),
    }


@pytest.mark.parametrize("cancel", ["task", "cancel_scope"])
async def test_a_cancelled_request_gives_its_lease_back(
    tmp_path: Path, redis_url: str, cancel: str
) -> None:
    """Cancelled while the app runs: once (task.cancel), or again at every await as an anyio
    cancel scope does, so the release itself is cancelled too."""
    store = redis.Redis.from_url(redis_url)
    disconnect = asyncio.Event()

    async def receive() -> Message:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise AssertionError("a held request sends nothing")

    token = make_token("10").encode()
    scope = asgi_request("/hold", cancel, [(b"authorization", b"Bearer " + token)])
    async with running_app(limit_settings(tmp_path, redis_url), tmp_path) as app:
        scopes: list[anyio.CancelScope] = []

        async def in_cancel_scope() -> None:
            with anyio.CancelScope() as cancel_scope:
                scopes.append(cancel_scope)
                await app(scope, receive, send)

        running = app(scope, receive, send) if cancel == "task" else in_cancel_scope()
        task = asyncio.create_task(running)

        async def lease_taken() -> bool:
            return store.zcard("cl:{u:10}") == 1 and started_count(tmp_path, cancel) == 1

        await wait_until(lease_taken, within=REQUEST_TIMEOUT, what="the request to start")
        if cancel == "task":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            scopes[0].cancel()
            await task
        await wait_until(no_key(store, "cl:{u:10}"), within=1, what="the lease to be released")
    store.close()


async def test_an_exception_in_the_app_gives_the_lease_back(tmp_path: Path, redis_url: str) -> None:
    store = redis.Redis.from_url(redis_url)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        raise OSError("the connection broke")

    scope = asgi_request("/upload", "failing", [])
    scope["method"] = "POST"
    async with running_app(limit_settings(tmp_path, redis_url), tmp_path) as app:
        with pytest.raises(OSError, match="the connection broke"):
            await app(scope, receive, send)
        await all_released(store)
    assert started_count(tmp_path, "failing") == 1  # the app ran: the lease was taken
    store.close()


async def test_the_real_app_checks_rate_limits_before_taking_a_lease(
    app_with: AppFactory, redis_url: str
) -> None:
    tiers = {**DEFAULT_TIERS, "read": RateLimitTier(capacity=1, refill=1, period_seconds=3600)}
    admitted_labels = {"identity": "address", "outcome": "admitted", "source": "redis"}

    def admitted() -> float:
        name = "hiringpro_concurrency_limit_decisions_total"
        return REGISTRY.get_sample_value(name, admitted_labels) or 0.0

    async with app_with(
        redis_url=redis_url,
        rate_limit_enabled=True,
        rate_limit_tiers=tiers,
        concurrency_limit_enabled=True,
        redis_socket_timeout_seconds=LOADED_MACHINE_MARGIN,
        redis_connect_timeout_seconds=LOADED_MACHINE_MARGIN,
    ) as app:
        before = admitted()
        async with client_for(app, CLIENT) as http:
            first = await http.get("/api/jobs")
            second = await http.get("/api/jobs")
        store = redis.Redis.from_url(redis_url)
        await all_released(store)
        store.close()
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"
    # Only the request the rate limiter let through took (and gave back) a lease.
    assert admitted() - before == 1


# Two uvicorn processes sharing one Redis.


@pytest.fixture(scope="module")
def meeting_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("concurrency-meeting")


@pytest.fixture(scope="module")
def servers(redis_server: RedisServer, meeting_dir: Path) -> Iterator[UvicornProcesses]:
    """Two processes of the test app on the worker's Redis (tests use their own identities)."""
    if redis_server.process is None:
        redis_server.start()
    env = {
        "JWT_SECRET": JWT_SECRET,
        "DATA_DIR": str(meeting_dir),
        "REDIS_URL": redis_server.url,
        "REDIS_SOCKET_TIMEOUT_SECONDS": str(LOADED_MACHINE_MARGIN),
        "REDIS_CONNECT_TIMEOUT_SECONDS": str(LOADED_MACHINE_MARGIN),
        "CONCURRENCY_LIMIT_PER_USER": str(USER_LIMIT),
        "CONCURRENCY_LIMIT_PER_ADDRESS": str(ADDRESS_LIMIT),
        "CONCURRENCY_LEASE_TTL_SECONDS": str(LEASE_TTL_SECONDS),
        "CONCURRENCY_LIMIT_EXEMPT_PATHS": json.dumps(["/health"]),
        # A silent fallback to in-process counts would then admit the full limit per process.
        "RATE_LIMIT_EXPECTED_PROCESSES": "1",
        "CONCURRENCY_TEST_DIR": str(meeting_dir),
    }
    processes = UvicornProcesses(
        "tests.middleware.concurrency_app:create_concurrency_app", 2, env, factory=True
    )
    with processes:
        yield processes


@pytest.mark.slow
async def test_the_limit_is_exact_across_two_processes(
    servers: UvicornProcesses, meeting_dir: Path, redis_url: str
) -> None:
    requests = 5 * USER_LIMIT
    store = redis.Redis.from_url(redis_url)
    limits = httpx.Limits(max_connections=requests)
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT) as http:
        pending, answers = await hold_requests(
            http, servers.urls, meeting_dir, "exact", requests, bearer(20)
        )
        assert started_count(meeting_dir, "exact") == USER_LIMIT
        assert len(pending) == USER_LIMIT
        assert len(answers) == requests - USER_LIMIT
        for response in answers:
            assert_refused(response)
        assert store.zcard("cl:{u:20}") == USER_LIMIT
        release(meeting_dir, "exact")
        finished = await asyncio.gather(*pending)
    assert [response.status_code for response in finished] == [200] * USER_LIMIT
    await wait_until(no_key(store, "cl:{u:20}"), within=1, what="every lease to be released")
    store.close()


@pytest.mark.slow
async def test_a_client_leaving_a_streaming_response_ends_its_lease(
    servers: UvicornProcesses, meeting_dir: Path, redis_url: str
) -> None:
    store = redis.Redis.from_url(redis_url)
    async with (
        httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as http,
        http.stream(
            "GET", f"{servers.urls[0]}/stream", params={"name": "stream"}, headers=bearer(21)
        ) as response,
    ):
        async for line in response.aiter_lines():
            assert line == "started"
            break
        assert store.zcard("cl:{u:21}") == 1
    # The client closed the connection mid-response; the stream itself would run for minutes.
    await wait_until(no_key(store, "cl:{u:21}"), within=1, what="the lease to be released")
    assert not (meeting_dir / "stream.release").exists()
    store.close()


@pytest.mark.slow
async def test_a_client_cutting_off_its_upload_ends_its_lease(
    servers: UvicornProcesses, meeting_dir: Path, redis_url: str
) -> None:
    store = redis.Redis.from_url(redis_url)
    port = servers.ports[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    token = make_token("22")
    writer.write(
        b"POST /upload?name=upload HTTP/1.1\r\nHost: test\r\n"
        + f"Authorization: Bearer {token}\r\n".encode()
        + b"Content-Length: 1000000\r\n\r\n"
        + b"x" * 1000
    )
    await writer.drain()

    async def upload_started() -> bool:
        return started_count(meeting_dir, "upload") == 1 and store.zcard("cl:{u:22}") == 1

    await wait_until(upload_started, within=REQUEST_TIMEOUT, what="the upload to start")
    writer.close()
    await writer.wait_closed()
    await wait_until(no_key(store, "cl:{u:22}"), within=1, what="the lease to be released")
    store.close()


@pytest.mark.slow
async def test_work_a_client_left_keeps_its_lease_until_it_ends(
    servers: UvicornProcesses, meeting_dir: Path, redis_url: str
) -> None:
    """The handler goes on after its client left: its slot stays taken (leaving early must not
    let a client run more than its limit), and is given back when the handler ends."""
    store = redis.Redis.from_url(redis_url)
    _, writer = await asyncio.open_connection("127.0.0.1", servers.ports[0])
    token = make_token("23")
    writer.write(
        b"GET /hold?name=left HTTP/1.1\r\nHost: test\r\n"
        + f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()

    async def started() -> bool:
        return started_count(meeting_dir, "left") == 1

    await wait_until(started, within=REQUEST_TIMEOUT, what="the request to start")
    writer.close()
    await writer.wait_closed()

    async def noticed() -> bool:
        return (meeting_dir / "left.disconnected").exists()

    await wait_until(noticed, within=1, what="the handler to see the disconnect")
    assert store.zcard("cl:{u:23}") == 1
    release(meeting_dir, "left")
    await wait_until(no_key(store, "cl:{u:23}"), within=1, what="the lease to be released")
    store.close()
