"""The load shedder as ASGI middleware: in front of a small app whose routes wait until the test
lets them finish, in front of the real app, and in a real server process saturated by slow
background requests (tests/middleware/overload_app.py)."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope

from app.config import Settings
from app.config.priorities import DEFAULT_PRIORITY_PATHS, PriorityQueue
from app.main import create_app
from app.middleware.body_limit import BodyLimitMiddleware
from app.middleware.load_shedder import LoadShedderMiddleware
from app.middleware.rate_limiter import RateLimitMiddleware
from app.middleware.request_context import RequestContextMiddleware
from app.middleware.shutdown import ShutdownMiddleware
from tests.conftest import TEST_JWT_SECRET
from tests.middleware.rate_limiter.helpers import make_token
from tests.support.apps import AppFactory, client_for
from tests.support.attempts import answer_question, start_attempt
from tests.support.factories import candidate_token, create_test
from tests.support.uvicorn_processes import UvicornProcesses
from tests.support.wait import LOADED_MACHINE_MARGIN, wait_until

PATIENT = PriorityQueue(size=5, timeout_seconds=60.0, retry_after_seconds=1)


class Gates:
    """Routes called with ?hold=1 wait here until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.entered = 0

    async def pass_through(self, request: Request) -> None:
        if request.query_params.get("hold"):
            self.entered += 1
            await self.opened.wait()


def shedder_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Limit 2 for good: background may run 1, normal 2, critical 3. Normal waits in a queue
    of 1, background never waits."""
    values: dict[str, Any] = {
        "jwt_secret": TEST_JWT_SECRET,
        "data_dir": tmp_path,
        "overload_min_limit": 2,
        "overload_initial_limit": 2,
        "overload_max_limit": 2,
        "overload_background_share": 0.5,
        "overload_critical_headroom": 0.5,
        "overload_queues": {
            "critical": PATIENT,
            "normal": PriorityQueue(size=1, timeout_seconds=60.0, retry_after_seconds=2),
            "background": PriorityQueue(size=0, timeout_seconds=0, retry_after_seconds=10),
        },
    }
    values.update(overrides)
    return Settings(**values)


def build_app(settings: Settings, gates: Gates) -> Starlette:
    async def held(request: Request) -> Response:
        await gates.pass_through(request)
        return JSONResponse({"path": request.url.path})

    async def boom(request: Request) -> Response:
        raise RuntimeError("handler bug")

    async def read_body(request: Request) -> Response:
        return JSONResponse({"size": len(await request.body())})

    app = Starlette(
        routes=[
            Route("/api/admin/candidates/search", held),
            Route("/api/jobs", held),
            Route("/api/tests/{attempt_id}/answer", held, methods=["POST"]),
            Route("/api/tests/complete", held, methods=["POST"]),
            Route("/api/auth/login", held, methods=["POST"]),
            Route("/api/profile", read_body, methods=["PATCH"]),
            Route("/api/boom", boom),
            Route("/health", held),
            Route("/metrics", held),
        ]
    )
    app.add_middleware(LoadShedderMiddleware, settings=settings)
    return app


def shedder_of(app: ASGIApp) -> LoadShedderMiddleware:
    """The app's shedder (Starlette builds the middleware stack on the first request)."""
    node: Any = getattr(app, "middleware_stack", None)
    while node is not None:
        if isinstance(node, LoadShedderMiddleware):
            return node
        node = getattr(node, "app", None)
    raise AssertionError("no LoadShedderMiddleware in the app")


@asynccontextmanager
async def shedding_app(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Gates, Starlette]]:
    gates = Gates()
    app = build_app(shedder_settings(tmp_path, **overrides), gates)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        try:
            assert (await client.get("/health")).status_code == 200  # builds the stack
            yield client, gates, app
        finally:
            gates.opened.set()


async def held_requests(
    client: httpx.AsyncClient, gates: Gates, method: str, path: str, count: int, **kwargs: Any
) -> list["asyncio.Task[httpx.Response]"]:
    """`count` requests that reached their route and wait there."""
    tasks = []
    for _ in range(count):
        entered = gates.entered
        tasks.append(
            asyncio.create_task(client.request(method, path, params={"hold": "1"}, **kwargs))
        )

        async def reached(before: int = entered) -> bool:
            return gates.entered > before

        await wait_until(reached, within=5, what=f"{method} {path} to reach its route")
    return tasks


async def queued_request(
    client: httpx.AsyncClient, app: Starlette, method: str, path: str, **kwargs: Any
) -> "asyncio.Task[httpx.Response]":
    """A request that waits in the shedder's normal queue."""
    admission = shedder_of(app).admission
    before = admission.queued("normal")
    task = asyncio.create_task(client.request(method, path, **kwargs))

    async def waiting() -> bool:
        return admission.queued("normal") > before

    await wait_until(waiting, within=5, what=f"{method} {path} to queue")
    return task


def assert_shed(response: httpx.Response, priority: str, retry_after: int) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(retry_after)
    assert response.json() == {
        "error": {
            "code": "overloaded",
            "message": f"The server is overloaded. Retry in {retry_after} "
            + ("second." if retry_after == 1 else "seconds."),
            "retry_after": retry_after,
            "priority": priority,
        }
    }


def shed_count(priority: str, reason: str) -> float:
    labels = {"priority": priority, "reason": reason}
    return REGISTRY.get_sample_value("hiringpro_overload_shed_total", labels) or 0.0


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_background_over_its_share_is_shed_at_once(tmp_path: Path) -> None:
    async with shedding_app(tmp_path) as (client, gates, _):
        [running] = await held_requests(client, gates, "GET", "/api/admin/candidates/search", 1)
        before = shed_count("background", "at_limit")
        assert_shed(await client.get("/api/admin/candidates/search"), "background", 10)
        assert shed_count("background", "at_limit") == before + 1
        # Normal requests still have the rest of the limit.
        assert (await client.get("/api/jobs")).status_code == 200
        gates.opened.set()
        assert (await running).status_code == 200
        assert (await client.get("/api/admin/candidates/search")).status_code == 200


async def test_critical_runs_above_the_limit_while_normal_queues_then_is_shed(
    tmp_path: Path,
) -> None:
    async with shedding_app(tmp_path) as (client, gates, app):
        normal = await held_requests(client, gates, "GET", "/api/jobs", 2)
        critical = await held_requests(client, gates, "POST", "/api/tests/5/answer", 1)
        assert shedder_of(app).admission.in_flight == 3
        waiting = await queued_request(client, app, "GET", "/api/jobs")
        assert_shed(await client.get("/api/jobs"), "normal", 2)  # its queue holds one
        gates.opened.set()
        for task in [*normal, *critical, waiting]:
            assert (await task).status_code == 200
    assert shedder_of(app).admission.in_flight == 0


async def test_probes_and_scrapes_are_never_shed(tmp_path: Path) -> None:
    async with shedding_app(tmp_path) as (client, gates, app):
        await held_requests(client, gates, "POST", "/api/tests/5/answer", 3)
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert shedder_of(app).admission.in_flight == 3


async def test_critical_is_shed_only_past_its_headroom_and_queue(tmp_path: Path) -> None:
    queues = {
        "critical": PriorityQueue(size=1, timeout_seconds=60.0, retry_after_seconds=1),
        "normal": PATIENT,
        "background": PATIENT,
    }
    async with shedding_app(tmp_path, overload_queues=queues) as (client, gates, app):
        await held_requests(client, gates, "POST", "/api/tests/5/answer", 3)
        admission = shedder_of(app).admission
        task = asyncio.create_task(client.post("/api/tests/5/answer"))

        async def critical_waits() -> bool:
            return admission.queued("critical") == 1

        await wait_until(critical_waits, within=5, what="a critical request to queue")
        assert_shed(await client.post("/api/tests/5/answer"), "critical", 1)
        gates.opened.set()
        assert (await task).status_code == 200


async def test_the_slot_is_given_back_when_the_app_fails(tmp_path: Path) -> None:
    async with shedding_app(tmp_path) as (client, _, app):
        with pytest.raises(RuntimeError, match="handler bug"):
            await client.get("/api/boom")
        assert shedder_of(app).admission.in_flight == 0


async def test_the_slot_is_given_back_when_the_request_is_cancelled(tmp_path: Path) -> None:
    """As uvicorn cancels a request at shutdown (or anything else cancels its task)."""
    async with shedding_app(tmp_path) as (client, gates, app):
        [task] = await held_requests(client, gates, "GET", "/api/jobs", 1)
        assert shedder_of(app).admission.in_flight == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert shedder_of(app).admission.in_flight == 0


async def test_the_slot_is_given_back_when_the_client_disconnects(tmp_path: Path) -> None:
    """A client gone mid-body: the app stops reading (ClientDisconnect) and the slot is free."""
    async with shedding_app(tmp_path) as (_, _, app):
        sent: list[Message] = []
        messages: list[Message] = [
            {"type": "http.request", "body": b"{", "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> Message:
            return messages.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "PATCH",
            "scheme": "http",
            "path": "/api/profile",
            "raw_path": b"/api/profile",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 40000),
            "server": ("testserver", 80),
        }
        with pytest.raises(ClientDisconnect):
            await app(scope, receive, send)
        assert shedder_of(app).admission.in_flight == 0


async def test_a_login_with_the_token_of_a_test_taker_is_critical(tmp_path: Path) -> None:
    taker, other = make_token("7", key=TEST_JWT_SECRET), make_token("8", key=TEST_JWT_SECRET)
    expired = make_token("7", key=TEST_JWT_SECRET, expires_in=-600)
    forged = make_token("7", key="not-the-secret-" + "x" * 40)
    async with shedding_app(tmp_path) as (client, gates, app):
        # An answer marks its user as taking a test.
        assert (await client.post("/api/tests/5/answer", headers=bearer(taker))).status_code == 200
        await held_requests(client, gates, "GET", "/api/jobs", 2)
        await queued_request(client, app, "GET", "/api/jobs")
        # Normal requests now find the limit reached and their queue full.
        assert_shed(await client.post("/api/auth/login"), "normal", 2)
        assert_shed(await client.post("/api/auth/login", headers=bearer(other)), "normal", 2)
        assert_shed(await client.post("/api/auth/login", headers=bearer(forged)), "normal", 2)
        # The test-taker's login runs, with the live token or one that ran out mid-test.
        assert (await client.post("/api/auth/login", headers=bearer(taker))).status_code == 200
        assert (await client.post("/api/auth/login", headers=bearer(expired))).status_code == 200
        # Only logins: the taker's other requests keep their own priority.
        assert_shed(await client.get("/api/jobs", headers=bearer(taker)), "normal", 2)
        # Completing the test ends it.
        assert (await client.post("/api/tests/complete", headers=bearer(taker))).status_code == 200
        assert_shed(await client.post("/api/auth/login", headers=bearer(taker)), "normal", 2)


async def test_disabled_it_admits_everything_and_counts_nothing(tmp_path: Path) -> None:
    async with shedding_app(tmp_path, overload_enabled=False) as (client, gates, app):
        held = await held_requests(client, gates, "GET", "/api/admin/candidates/search", 5)
        assert shedder_of(app).admission.in_flight == 0
        gates.opened.set()
        assert [(await task).status_code for task in held] == [200] * 5


def test_contradicting_settings_fail_when_the_app_is_built(tmp_path: Path) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="OVERLOAD_MIN_LIMIT"):
        LoadShedderMiddleware(
            app, shedder_settings(tmp_path, overload_min_limit=3, overload_initial_limit=2)
        )
    with pytest.raises(ValueError, match="both exempt and prioritised"):
        LoadShedderMiddleware(
            app, shedder_settings(tmp_path, overload_never_shed_paths=["/health/detailed"])
        )
    with pytest.raises(ValueError, match="background"):
        LoadShedderMiddleware(
            app,
            shedder_settings(tmp_path, overload_queues={"critical": PATIENT, "normal": PATIENT}),
        )


async def test_the_load_monitor_runs_with_requests_and_stops_with_the_app(tmp_path: Path) -> None:
    gates = Gates()
    app = build_app(shedder_settings(tmp_path), gates)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    lifespan = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"

    def monitors() -> list["asyncio.Task[Any]"]:
        return [task for task in asyncio.all_tasks() if task.get_name() == "load-monitor"]

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        assert (await client.get("/api/jobs")).status_code == 200
        assert (await client.get("/api/jobs")).status_code == 200
    assert len(monitors()) == 1
    await inbox.put({"type": "lifespan.shutdown"})
    assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
    await lifespan
    await asyncio.gather(*monitors(), return_exceptions=True)
    assert monitors() == []


# --- the real app ---------------------------------------------------------------------------


def test_the_shedder_sits_inside_context_and_shutdown_and_before_limits_and_body(
    tmp_path: Path,
) -> None:
    order: list[Any] = [m.cls for m in create_app(Settings(data_dir=tmp_path)).user_middleware]
    # user_middleware lists the outermost first.
    expected = [
        RequestContextMiddleware,
        ShutdownMiddleware,
        LoadShedderMiddleware,
        BodyLimitMiddleware,
        RateLimitMiddleware,
    ]
    assert [cls for cls in order if cls in expected] == expected


async def test_the_real_app_sheds_with_a_request_id_and_an_access_log_line(
    app_with: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    queues = {
        "critical": PATIENT,
        "normal": PriorityQueue(size=0, timeout_seconds=0, retry_after_seconds=2),
        "background": PriorityQueue(size=0, timeout_seconds=0, retry_after_seconds=10),
    }
    async with (
        app_with(
            overload_min_limit=1,
            overload_initial_limit=1,
            overload_max_limit=1,
            overload_queues=queues,
        ) as app,
        client_for(app) as client,
    ):
        assert (await client.get("/api/jobs")).status_code == 200
        admission = shedder_of(app).admission
        # The process's one slot taken, as by a request still running.
        slot = admission.try_acquire("normal")
        assert slot is not None
        try:
            with caplog.at_level(logging.INFO, logger="app.access"):
                response = await client.get("/api/jobs", headers={"X-Request-ID": "shed-1"})
            assert_shed(response, "normal", 2)
            assert response.headers["X-Request-ID"] == "shed-1"
            assert any(getattr(record, "status", None) == 503 for record in caplog.records), (
                "no access log line for the shed request"
            )
            assert (await client.get("/health")).status_code == 200
            # Critical requests still reach the app (which wants a token for them).
            started = await client.post("/api/tests/start", json={"test_id": 1})
            assert started.status_code == 401
        finally:
            admission.release(slot, None)
        assert (await client.get("/api/jobs")).status_code == 200


async def test_requests_waiting_for_a_database_connection_are_sampled(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/api/jobs")).status_code == 200  # starts the load monitor
    budget = app.state.resources.database.budgets["admin"]
    assert budget.limit is not None

    def waiters_gauge() -> float:
        return REGISTRY.get_sample_value("hiringpro_db_pool_waiters") or 0.0

    async with AsyncExitStack() as held:
        for _ in range(budget.limit):
            await held.enter_async_context(budget)
        waiting = asyncio.create_task(budget.__aenter__())

        async def sampled_one() -> bool:
            return waiters_gauge() == 1

        await wait_until(sampled_one, within=5, what="the monitor to sample the waiter")
    await waiting
    await budget.__aexit__(None, None, None)

    async def sampled_none() -> bool:
        return waiters_gauge() == 0

    await wait_until(sampled_none, within=5, what="the monitor to see no waiter")


async def test_default_settings_never_shed_a_burst_of_ordinary_traffic(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    responses = await asyncio.gather(*(client.get("/api/jobs") for _ in range(60)))
    assert [response.status_code for response in responses] == [200] * 60
    assert shedder_of(app).admission.in_flight == 0


# --- a real server process ------------------------------------------------------------------

SLOW_REPORT = "/overload-test/report"


@pytest.fixture
def overload_server(tmp_path: Path, database_url: str) -> Iterator[str]:
    """One uvicorn process of the real app plus a slow background route, at a limit of 4."""
    env = {
        "ENVIRONMENT": "development",
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATA_DIR": str(tmp_path / "server-data"),
        "DATABASE_URL": database_url,
        "RATE_LIMIT_ENABLED": "false",
        "CONCURRENCY_LIMIT_ENABLED": "false",
        "CACHE_ENABLED": "false",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "OVERLOAD_MIN_LIMIT": "2",
        "OVERLOAD_INITIAL_LIMIT": "4",
        "OVERLOAD_MAX_LIMIT": "4",
        "OVERLOAD_PRIORITY_PATHS": json.dumps(
            {**DEFAULT_PRIORITY_PATHS, SLOW_REPORT: "background"}
        ),
    }
    with UvicornProcesses("tests.middleware.overload_app:app", 1, env) as server:
        yield server.urls[0]


@pytest.mark.slow
async def test_a_server_saturated_by_background_work_still_serves_test_takers(
    app: FastAPI, client: httpx.AsyncClient, overload_server: str
) -> None:
    test, questions = await create_test(app, questions=12)
    token = await candidate_token(client)
    attempt = (await start_attempt(client, token, test.id)).json()["attempt_id"]

    stop = asyncio.Event()
    background: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    timeout = httpx.Timeout(30.0 + LOADED_MACHINE_MARGIN)
    async with httpx.AsyncClient(base_url=overload_server, limits=limits, timeout=timeout) as http:

        async def report_runner() -> None:
            while not stop.is_set():
                response = await http.get(SLOW_REPORT, params={"seconds": "2"})
                background.append(response)
                if response.status_code == 503:
                    await asyncio.sleep(0.05)

        runners = [asyncio.create_task(report_runner()) for _ in range(12)]
        try:

            async def saturated() -> bool:
                return sum(r.status_code == 503 for r in background) >= 5

            await wait_until(saturated, within=30, what="background requests to be shed")
            shed_before = sum(r.status_code == 503 for r in background)
            answers = [
                await answer_question(http, token, attempt, question.id, "B")
                for question in questions
            ]

            async def still_saturated() -> bool:
                return sum(r.status_code == 503 for r in background) > shed_before

            # The pressure lasted through the answers: background was still being shed after.
            await wait_until(still_saturated, within=10, what="background to be shed again")
        finally:
            stop.set()
            await asyncio.gather(*runners)

    assert [response.status_code for response in answers] == [200] * len(questions)
    statuses = {response.status_code for response in background}
    assert statuses == {200, 503}, statuses
    for response in background:
        if response.status_code == 503:
            assert_shed(response, "background", 10)
            assert response.headers["X-Request-ID"]
